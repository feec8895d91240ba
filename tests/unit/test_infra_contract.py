"""The deployment (infra/, azure.yaml) and the code agree.

Every setting, container, trigger setting and metric the code uses is deployed, and the Bicep
names no setting the code does not know. Without a Bicep compiler here, the test also does the
compiler's cross-file checks that matter: module parameters and outputs exist.

The Bicep is read by a small tokenizer (strings with escapes and `${...}` interpolation, `//`
and `/* */` comments, multi-line strings, nested brackets) and an object-literal reader, not
by regular expressions over the text. pycep-parser (checkov's parser) was the alternative: it
would add a dev dependency pinned by checkov's release cycle, lags new Bicep syntax, and its
output shape is an implementation detail; `make lint-infra` already proves that pycep parses
every file.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml  # PyYAML: in the dev set through mlflow

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
LLMOPS = ROOT / "llmops"

# Code settings that are deliberately not app settings, with the reason.
NOT_DEPLOYED = {
    "AZURE_OPENAI_API_KEY": "Entra ID: the app identity calls Azure OpenAI, which has keys off",
    "OPENAI_BASE_URL": "the deployed upstream is Azure OpenAI; OpenAI-compatible is for local runs",
    "OPENAI_API_KEY": "same: no OpenAI-compatible upstream in the deployment",
    "LLMOPS_MOCK_LATENCY_MS": "the offline mock upstream is for local runs and benchmarks",
    "LLMOPS_MOCK_CHUNK_DELAY_MS": "the offline mock upstream is for local runs and benchmarks",
    "LLMOPS_LOCAL_STORE_DIR": "the local folder store is used only when no storage is set",
    "AzureWebJobsStorage": "a connection string holds the account key: AzureWebJobsStorage__*",
    "FUNCTIONS_WORKER_RUNTIME": "Flex sets it from functionAppConfig.runtime, refuses the setting",
}
# App settings the code does not read: the platform's, with the reader.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential": "Functions host: identity-based AzureWebJobsStorage",
    "AZURE_CLIENT_ID": "azure-identity: the user-assigned identity DefaultAzureCredential uses",
    "DATABRICKS_CLIENT_ID": "databricks-sdk and MLflow: a service principal (OAuth M2M)",
    "DATABRICKS_CLIENT_SECRET": "databricks-sdk and MLflow: that service principal's secret",
    "AzureWebJobsStorage__queueServiceUri": "Functions host: queues over the identity",
    "AzureWebJobsStorage__tableServiceUri": "Functions host: tables over the identity",
    "PYTHON_ENABLE_INIT_INDEXING": "Python worker: HTTP streams (FastAPI extension)",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "host and Azure Monitor exporter: Entra ID",
}
ENV_NAME = re.compile(
    r"(LLMOPS_|AZURE_|OPENAI_|MLFLOW_|AzureWebJobs|APPLICATIONINSIGHTS_|FUNCTIONS_|DATABRICKS_)"
    r"[A-Za-z0-9_]*"
)
INSTRUMENTS = {"create_counter", "create_histogram", "create_gauge", "create_up_down_counter"}
INSTRUMENTS |= {f"create_observable_{kind}" for kind in ("gauge", "counter", "up_down_counter")}
AZD_VARIABLES = {
    "environmentName": "AZURE_ENV_NAME",
    "location": "AZURE_LOCATION",
    "principalId": "AZURE_PRINCIPAL_ID",
}
DECLARATIONS = ("param", "var", "output", "resource", "module")


# --- A Bicep reader ---------------------------------------------------------------------------
class BicepSyntaxError(ValueError):
    """The file is not the Bicep this reader understands; the message says where."""


@dataclass(frozen=True)
class Token:
    kind: str  # name | string | number | punct | newline
    text: str  # a string's value, each interpolation shown as "${}"
    line: int
    parts: tuple[tuple[Token, ...], ...] = ()  # a string's interpolated expressions


ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", "$": "$"}
PUNCT2 = ("==", "!=", "<=", ">=", "&&", "||", "??", "=~", "!~", "=>", "?.", "::")


class Lexer:
    def __init__(self, text: str, where: str) -> None:
        self.text, self.where, self.pos, self.line = text, where, 0, 1

    def fail(self, message: str) -> BicepSyntaxError:
        return BicepSyntaxError(f"{self.where}:{self.line}: {message}")

    def tokens(self, interpolation: bool = False) -> list[Token]:
        text, out, depth = self.text, [], 0
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\n":
                if out and out[-1].kind != "newline":
                    out.append(Token("newline", "\n", self.line))
                self.line, self.pos = self.line + 1, self.pos + 1
            elif char in " \t\r":
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated /* comment")
                self.line += text.count("\n", self.pos, end)
                self.pos = end + 2
            elif text.startswith("'''", self.pos):
                end = text.find("'''", self.pos + 3)
                if end < 0:
                    raise self.fail("unterminated ''' string")
                out.append(Token("string", text[self.pos + 3 : end], self.line))
                self.line += text.count("\n", self.pos, end)
                self.pos = end + 3
            elif char == "'":
                out.append(self.string())
            elif char.isdigit():
                match = re.compile(r"\d+").match(text, self.pos)
                assert match is not None
                out.append(Token("number", match.group(), self.line))
                self.pos = match.end()
            elif char.isalpha() or char == "_":
                match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, self.pos)
                assert match is not None
                out.append(Token("name", match.group(), self.line))
                self.pos = match.end()
            elif interpolation and char == "}" and depth == 0:
                self.pos += 1
                return out
            else:
                punct = text[self.pos : self.pos + 2]
                punct = punct if punct in PUNCT2 else char
                depth += (punct in "{[(") - (punct in "}])")
                out.append(Token("punct", punct, self.line))
                self.pos += len(punct)
        if interpolation:
            raise self.fail("unterminated ${ interpolation")
        return out

    def string(self) -> Token:
        line, chunks, parts = self.line, [], []
        self.pos += 1
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.fail("unterminated string")
            char = self.text[self.pos]
            if char == "'":
                self.pos += 1
                return Token("string", "".join(chunks), line, tuple(parts))
            if char == "\\":
                escape = self.text[self.pos + 1 : self.pos + 2]
                if escape == "u":
                    match = re.compile(r"u\{([0-9A-Fa-f]+)\}").match(self.text, self.pos + 1)
                    if match is None:
                        raise self.fail("bad \\u{...} escape")
                    chunks.append(chr(int(match.group(1), 16)))
                    self.pos = match.end()
                    continue
                if escape not in ESCAPES:
                    raise self.fail(f"unknown escape \\{escape}")
                chunks.append(ESCAPES[escape])
                self.pos += 2
            elif self.text.startswith("${", self.pos):
                self.pos += 2
                parts.append(tuple(self.tokens(interpolation=True)))
                chunks.append("${}")
            else:
                chunks.append(char)
                self.pos += 1


@dataclass(frozen=True)
class Decl:
    keyword: str  # param | var | resource | module | output | ...
    name: str
    kind: str  # a param's or output's type, a resource's type, a module's path
    value: tuple[Token, ...]  # after `=`; empty for a param without default


def closing(tokens: list[Token] | tuple[Token, ...], start: int) -> int:
    """Index of the bracket that closes tokens[start]."""
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index].kind == "punct" and tokens[index].text in "{[(":
            depth += 1
        elif tokens[index].kind == "punct" and tokens[index].text in "}])":
            depth -= 1
            if depth == 0:
                return index
    raise BicepSyntaxError(f"line {tokens[start].line}: {tokens[start].text} is never closed")


def entries(tokens: tuple[Token, ...]) -> dict[str, tuple[Token, ...]]:
    """The properties of the object literal that `tokens` starts with, in order."""
    if not tokens or tokens[0].text != "{":
        raise BicepSyntaxError(f"line {tokens[0].line if tokens else '?'}: not an object")
    end, index, found = closing(tokens, 0), 1, {}
    while index < end:
        token = tokens[index]
        if token.kind == "newline" or token.text == ",":
            index += 1
            continue
        if token.kind not in ("name", "string") or token.parts or tokens[index + 1].text != ":":
            raise BicepSyntaxError(f"line {token.line}: expected a property, got {token.text!r}")
        value_end = index + 2
        while value_end < end and not (
            tokens[value_end].kind == "newline" or tokens[value_end].text == ","
        ):
            opener = tokens[value_end].kind == "punct" and tokens[value_end].text in "{[("
            value_end = closing(tokens, value_end) + 1 if opener else value_end + 1
        if token.text in found:
            raise BicepSyntaxError(f"line {token.line}: duplicate property {token.text}")
        found[token.text] = tuple(tokens[index + 2 : value_end])
        index = value_end
    return found


def body(value: tuple[Token, ...]) -> tuple[Token, ...]:
    """The object of a resource or module value: `{...}`, `if (...) {...}`, `[for ...: {...}]`."""
    depth = 0
    for index, token in enumerate(value):
        if token.kind == "punct" and token.text in "()":
            depth += 1 if token.text == "(" else -1
        elif token.text == "{" and depth == 0:
            return value[index : closing(value, index) + 1]
    raise BicepSyntaxError(f"line {value[0].line}: no object body")


def literal(value: tuple[Token, ...]) -> str | None:
    """The value of a plain string literal (no interpolation), else None."""
    if len(value) == 1 and value[0].kind == "string" and not value[0].parts:
        return value[0].text
    return None


def walk(tokens: tuple[Token, ...] | list[Token]) -> Iterator[Token]:
    """Every token, including those inside string interpolations."""
    for token in tokens:
        yield token
        for part in token.parts:
            yield from walk(part)


def references(tokens: tuple[Token, ...] | list[Token], *chain: str) -> list[str]:
    """Names X of every `chain[0].chain[1]....X` in the tokens (interpolations included)."""
    flat, found = list(walk(tokens)), []
    pattern = [text for name in chain for text in (name, ".")]
    for index in range(len(flat) - len(pattern)):
        if [token.text for token in flat[index : index + len(pattern)]] == pattern:
            found.append(flat[index + len(pattern)].text)
    return found


@dataclass(frozen=True)
class Bicep:
    path: Path
    tokens: tuple[Token, ...]
    decls: tuple[Decl, ...]

    def get(self, keyword: str, name: str) -> Decl:
        for decl in self.decls:
            if decl.keyword == keyword and decl.name == name:
                return decl
        raise AssertionError(f"{self.path.relative_to(ROOT)} declares no {keyword} {name}")

    def all(self, keyword: str) -> dict[str, Decl]:
        return {decl.name: decl for decl in self.decls if decl.keyword == keyword}


@cache
def bicep(relative: str) -> Bicep:
    path = INFRA / relative
    tokens = Lexer(path.read_text(), str(path.relative_to(ROOT))).tokens()
    decls, index = [], 0
    while index < len(tokens):
        token = tokens[index]
        if token.kind == "newline":
            index += 1
        elif token.text == "@":  # a decorator: @name(...)
            index = closing(tokens, index + 2) + 1
        elif token.kind == "name" and token.text in DECLARATIONS:
            line_end = index
            while line_end < len(tokens) and tokens[line_end].kind != "newline":
                opener = tokens[line_end].kind == "punct" and tokens[line_end].text in "{[("
                line_end = closing(tokens, line_end) + 1 if opener else line_end + 1
            statement = tokens[index:line_end]
            equals = next((i for i, t in enumerate(statement) if t.text == "="), len(statement))
            kind = statement[2].text if token.text != "var" else ""
            decls.append(Decl(token.text, statement[1].text, kind, tuple(statement[equals + 1 :])))
            index = line_end
        elif token.text in ("targetScope", "metadata", "import", "type", "func"):
            while index < len(tokens) and tokens[index].kind != "newline":
                index += 1
        else:
            raise BicepSyntaxError(f"{relative}:{token.line}: unexpected {token.text!r}")
    return Bicep(path, tuple(tokens), tuple(decls))


def bicep_files() -> list[str]:
    return sorted(str(path.relative_to(INFRA)) for path in INFRA.rglob("*.bicep"))


# --- What the deployment says -----------------------------------------------------------------
def app_settings() -> dict[str, tuple[Token, ...]]:
    return entries(bicep("app/function-app.bicep").get("var", "appSettings").value)


def param_default(file: str, name: str) -> str | None:
    """A param's default, followed through main.bicep when a module receives it."""
    own = bicep(file).get("param", name).value
    if own or file == "main.bicep":
        return literal(own)
    for module in bicep("main.bicep").all("module").values():
        if module.kind == file:
            given = entries(entries(body(module.value))["params"]).get(name, ())
            if len(given) == 1 and given[0].kind == "name":
                return param_default("main.bicep", given[0].text)
            return literal(given)
    raise AssertionError(f"no module in main.bicep deploys {file}")


# --- What the code says ----------------------------------------------------------------------
def code_settings() -> set[str]:
    """Environment variable names among llmops/settings.py's module constants."""
    tree = ast.parse((LLMOPS / "settings.py").read_text())
    return {
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.isupper()
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and ENV_NAME.fullmatch(node.value.value)
    }


def code_containers() -> set[str]:
    """The request log's default container and the fixed *_CONTAINER names."""
    tree = ast.parse((LLMOPS / "settings.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name, value = node.targets[0].id, node.value
            if name.endswith("_CONTAINER") and isinstance(value, ast.Constant):
                if re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", str(value.value)):
                    found.add(str(value.value))
        if isinstance(node, ast.ClassDef) and node.name == "LogSettings":
            for item in node.body:
                if (
                    isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and item.target.id == "container"
                    and isinstance(item.value, ast.Constant)
                ):
                    found.add(str(item.value.value))
    return found


def python_trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted([ROOT / "function_app.py", *LLMOPS.rglob("*.py")]):
        yield path, ast.parse(path.read_text())


def code_metrics() -> tuple[set[str], list[str]]:
    """Instrument names the code creates, and the calls whose name is not a readable string."""
    names, unreadable = set(), []
    for path, tree in python_trees():
        constants = {
            node.targets[0].id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        }
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in INSTRUMENTS
            ):
                continue
            arg = node.args[0] if node.args else None
            arg = arg or next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                names.add(constants[arg.id])
            else:
                unreadable.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return names, unreadable


def functions() -> dict[str, list[ast.Call]]:
    """Each Functions function (by its function_name, else its def name) and its decorators."""
    found = {}
    for _path, tree in python_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                calls = [d for d in node.decorator_list if isinstance(d, ast.Call)]
                named = [c for c in calls if getattr(c.func, "attr", "") == "function_name"]
                if not any(
                    getattr(c.func, "attr", "").endswith(("route", "trigger")) for c in calls
                ):
                    continue
                arg = named[0].args[0] if named and named[0].args else None
                name = arg.value if isinstance(arg, ast.Constant) else node.name
                found[str(name)] = calls
    return found


def binding_settings() -> set[str]:
    """App settings that trigger bindings read through %NAME% expressions."""
    found = set()
    for call in (call for calls in functions().values() for call in calls):
        for node in ast.walk(call):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update(re.findall(r"%([A-Za-z0-9_]+)%", node.value))
    return found


# --- The tests -------------------------------------------------------------------------------
def test_the_reader_handles_escapes_interpolation_comments_and_nesting() -> None:
    source = (
        "var x = { // a comment with { and '\n"
        "  'a.b': 'it\\'s ${join([\n'}', 'y'], '}')} \\${not} \\u{41}' /* } */\n"
        "  c: [\n    {\n      d: '''multi\n}line'''\n    }\n  ]\n  e: f ? { g: 1 } : {}\n}\n"
    )
    tokens = tuple(Lexer(source, "test").tokens())
    found = entries(tokens[tokens.index(next(t for t in tokens if t.text == "{")) :])
    assert list(found) == ["a.b", "c", "e"]
    assert found["a.b"][0].text == "it's ${} ${not} A"
    assert [t.text for t in found["a.b"][0].parts[0] if t.kind == "string"] == ["}", "y", "}"]
    assert next(t.text for t in found["e"] if t.kind != "newline") == "f"
    with pytest.raises(BicepSyntaxError, match="unterminated string"):
        Lexer("var x = 'open\n", "test").tokens()


def test_every_bicep_file_is_read() -> None:
    assert {"main.bicep", "app/function-app.bicep", "app/alerts.bicep"} <= set(bicep_files())
    for file in bicep_files():
        assert bicep(file).decls, file


def test_every_code_setting_is_an_app_setting() -> None:
    settings = code_settings()
    assert len(settings) > 40
    assert set(NOT_DEPLOYED) <= settings, "NOT_DEPLOYED names a setting the code no longer has"
    missing = sorted(settings - set(NOT_DEPLOYED) - set(app_settings()))
    assert missing == [], "add these to appSettings in infra/app/function-app.bicep"


def test_app_settings_name_only_settings_the_code_or_platform_reads() -> None:
    deployed = set(app_settings())
    unknown = sorted(deployed - code_settings() - set(PLATFORM_SETTINGS))
    assert unknown == [], "the code reads none of these (a typo, or a setting removed?)"
    assert set(PLATFORM_SETTINGS) <= deployed, "PLATFORM_SETTINGS names a setting not deployed"
    assert sorted(deployed & set(NOT_DEPLOYED)) == []


def test_the_app_settings_object_is_what_the_site_gets() -> None:
    for resource in bicep("app/function-app.bicep").all("resource").values():
        if resource.kind.startswith("Microsoft.Web/sites/config@"):
            config = entries(body(resource.value))
            assert literal(config["name"]) == "appsettings"
            assert [t.text for t in config["properties"]] == ["appSettings"]
            return
    raise AssertionError("infra/app/function-app.bicep has no sites/config appsettings")


def test_identity_only_storage_and_no_keys() -> None:
    settings = app_settings()
    assert literal(settings["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert "AzureWebJobsStorage__clientId" in settings
    assert "AzureWebJobsStorage__accountName" in settings
    storage = bicep("app/storage.bicep").get("resource", "storage")
    properties = entries(entries(body(storage.value))["properties"])
    assert [t.text for t in properties["allowSharedKeyAccess"]] == ["false"]
    for name, value in settings.items():
        assert not any("listKeys" in t.text for t in walk(value)), name


def test_every_container_the_code_uses_is_created() -> None:
    storage = bicep("app/storage.bicep")
    created = {literal(v) for v in entries(storage.get("var", "containerNames").value).values()}
    expected = code_containers()
    assert {"request-logs", "drift-reports", "retrain-requests", "retrain-runs"} <= expected
    assert sorted(expected - created) == []
    loops = [
        decl
        for decl in storage.all("resource").values()
        if "/containers@" in decl.kind and "containerNames" in [t.text for t in decl.value]
    ]
    assert loops, "no container resource loops over containerNames"
    assert bicep("main.bicep").get("var", "deploymentContainerName")


def test_request_logs_are_cooled_then_deleted_under_their_prefix() -> None:
    storage = bicep("app/storage.bicep")
    prefix = storage.get("var", "requestLogPrefix").value[0]
    parts = [t.text for t in prefix.parts[0]]
    assert (prefix.text, parts) == ("${}/v1/", ["containerNames", ".", "requestLogs"])
    policy = [t.text for t in body(storage.get("resource", "lifecycle").value)]
    for word in ("tierToCool", "delete", "requestLogPrefix", "requestLogRetentionDays"):
        assert word in policy


def alerts_module_metrics() -> set[str | None]:
    alerts = bicep("app/alerts.bicep")
    return {
        literal(value)
        for var in ("metricNames", "unalertedMetricNames")
        for value in entries(alerts.get("var", var).value).values()
    }


def test_every_metric_the_code_creates_is_in_the_alerts_module() -> None:
    names, unreadable = code_metrics()
    assert unreadable == [], "name instruments with a string literal or a module constant"
    missing = sorted(names - alerts_module_metrics())
    assert missing == [], "alert on these in infra/app/alerts.bicep, or list them as unalerted"


def test_every_metric_in_the_alerts_module_is_created_by_the_code() -> None:
    unknown = sorted(str(name) for name in alerts_module_metrics() - code_metrics()[0])
    assert unknown == [], "the code creates no instrument of these names"


def test_every_alerted_metric_is_used_by_a_rule() -> None:
    alerts = bicep("app/alerts.bicep")
    metric_keys = set(entries(alerts.get("var", "metricNames").value))
    used = set(references(alerts.get("var", "rules").value, "metricNames"))
    assert sorted(metric_keys - used) == []
    assert sorted(used - metric_keys) == []


def test_alert_queries_name_real_functions() -> None:
    chat = literal(bicep("app/alerts.bicep").get("var", "chatFunctions").value) or ""
    named = {name.strip().strip('"') for name in chat.split(",")}
    assert named == {"chat_completions", "azure_chat_completions"}
    assert sorted(named - set(functions())) == []


def test_every_binding_setting_is_set_and_the_drift_schedule_matches_the_code() -> None:
    settings = app_settings()
    assert "LLMOPS_DRIFT_SCHEDULE" in binding_settings()
    for name in sorted(binding_settings()):
        assert name in settings, f"%{name}% is read by a trigger: deploy it"
        value = settings[name]
        assert literal(value) != "", f"{name} must not be empty"
        if len(value) == 1 and value[0].kind == "name":
            assert param_default("app/function-app.bicep", value[0].text), name
    tree = ast.parse((LLMOPS / "settings.py").read_text())
    default = next(
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        and isinstance(n.targets[0], ast.Name)
        and n.targets[0].id == "DEFAULT_DRIFT_SCHEDULE"
        and isinstance(n.value, ast.Constant)
    )
    assert param_default("app/function-app.bicep", "driftSchedule") == default
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["driftSchedule"]["value"] == f"${{LLMOPS_DRIFT_SCHEDULE={default}}}"


def test_module_calls_match_the_module_parameters_and_outputs() -> None:
    main = bicep("main.bicep")
    modules = main.all("module")
    for symbol, module in modules.items():
        declared = bicep(module.kind).all("param")
        given = set(entries(entries(body(module.value))["params"]))
        assert sorted(given - set(declared)) == [], f"module {symbol}: unknown params"
        required = {name for name, decl in declared.items() if not decl.value}
        assert sorted(required - given) == [], f"module {symbol}: missing params"
    for symbol in set(modules):
        outputs = set(bicep(modules[symbol].kind).all("output"))
        used = set(references(main.tokens, symbol, "outputs"))
        assert sorted(used - outputs) == [], f"module {symbol}: no such outputs"


def test_azure_yaml_deploys_this_folder_as_a_python_function_app() -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text())
    (name, service), *others = config["services"].items()
    assert others == []
    assert (service["project"], service["language"], service["host"]) == (
        ".",
        "python",
        "function",
    )
    assert param_default("app/function-app.bicep", "serviceName") == name
    hooks = config["hooks"]["postdeploy"]
    for platform in ("posix", "windows"):
        assert (ROOT / hooks[platform]["run"]).is_file()


def test_hooks_read_only_outputs_azd_provides() -> None:
    outputs = set(bicep("main.bicep").all("output"))
    azd_builtin = {"AZURE_SUBSCRIPTION_ID", "AZURE_ENV_NAME"}
    for script in ("postdeploy.sh", "postdeploy.ps1"):
        text = (INFRA / "hooks" / script).read_text()
        used = set(re.findall(r"(?:\$\{|\$env:|\")((?:AZURE|RETRAIN|GATEWAY)_[A-Z_]+)", text))
        assert used, script
        assert sorted(used - outputs - azd_builtin) == [], script
    hook = bicep("hooks/retrain-events.bicep")
    assert {"functionAppName", "systemTopicName", "containerName", "functionName"} <= set(
        hook.all("param")
    )


def test_the_event_grid_subscription_targets_the_blob_trigger() -> None:
    hook = bicep("hooks/retrain-events.bicep")
    function = literal(hook.get("param", "functionName").value)
    container = literal(hook.get("param", "containerName").value)
    assert (function, container) == ("retrain_request", "retrain-requests")
    assert container in code_containers()
    subscription = entries(entries(body(hook.get("resource", "subscription").value))["properties"])
    endpoint = [t for t in walk(subscription["destination"]) if "webhooks" in t.text]
    assert [t.text for t in endpoint] == [
        "https://${}/runtime/webhooks/blobs?functionName=Host.Functions.${}&code=${}"
    ]
    filters = entries(subscription["filter"])
    assert "Microsoft.Storage.BlobCreated" in [t.text for t in filters["includedEventTypes"]]
    assert filters["subjectBeginsWith"][0].text == "/blobServices/default/containers/${}/"
    if function not in functions():
        pytest.skip(f"the code has no {function} function yet (the retraining trigger)")
    trigger = next(
        c for c in functions()[function] if getattr(c.func, "attr", "") == "blob_trigger"
    )
    arguments = {k.arg: k.value for k in trigger.keywords}
    assert ast.literal_eval(arguments["connection"]) == "AzureWebJobsStorage"
    path = arguments["path"]
    path_text = ast.literal_eval(path) if isinstance(path, ast.Constant) else ast.unparse(path)
    assert container in str(path_text)


def test_parameters_file_uses_the_azd_variables() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    for name, variable in AZD_VARIABLES.items():
        assert parameters[name]["value"] == f"${{{variable}}}"
    declared = bicep("main.bicep").all("param")
    assert sorted(set(parameters) - set(declared)) == []
    required = {name for name, decl in declared.items() if not decl.value}
    assert sorted(required - set(parameters)) == []
