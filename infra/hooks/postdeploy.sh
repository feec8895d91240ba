#!/bin/sh
# azd postdeploy hook: subscribe the `retrain_request` blob trigger to the storage account's
# Event Grid system topic (infra/hooks/retrain-events.bicep).
#
# Why after the deploy: the subscription's webhook carries the host's `blobs_extension` system
# key, which the host creates only once code with a blob trigger runs. Event Grid also
# validates the webhook when the subscription is created, so the function must answer then.
#
# azd passes its environment (the outputs of infra/main.bicep) to this script. It needs the
# Azure CLI, signed in to the same tenant (`az login`, or `azd config set auth.useAzCliAuth true`
# so azd and az share one sign-in). Re-run it alone with `azd hooks run postdeploy`.
set -eu

: "${AZURE_SUBSCRIPTION_ID:?run through azd: azd up, azd deploy or azd hooks run postdeploy}"
: "${AZURE_RESOURCE_GROUP:?missing: run azd provision first}"
: "${AZURE_FUNCTION_APP_NAME:?missing: run azd provision first}"
: "${AZURE_EVENTGRID_SYSTEM_TOPIC_NAME:?missing: run azd provision first}"
CONTAINER="${RETRAIN_REQUESTS_CONTAINER:-retrain-requests}"
FUNCTION="retrain_request"
ATTEMPTS="${LLMOPS_HOOK_ATTEMPTS:-30}"   # x 10 s
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

if ! command -v az >/dev/null 2>&1; then
  echo "postdeploy: the Azure CLI (az) is needed to subscribe $FUNCTION to Event Grid." >&2
  echo "Install it, sign in (az login), then run: azd hooks run postdeploy" >&2
  exit 1
fi

app() {
  az "$@" --subscription "$AZURE_SUBSCRIPTION_ID" -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME"
}

# The blob trigger arrives with the retraining trigger; until the code has it, there is
# nothing to subscribe.
if ! grep -rqs --include='*.py' "\"$FUNCTION\"" "$ROOT/function_app.py" "$ROOT/llmops"; then
  echo "postdeploy: the code defines no $FUNCTION function: Event Grid subscription skipped."
  exit 0
fi

# The host indexes the new code and creates the extension's key within a minute or two.
# The key is only tested for presence here; it is never printed.
attempt=1
until key="$(app functionapp keys list --query systemKeys.blobs_extension -o tsv 2>/dev/null)" &&
  [ -n "$key" ]; do
  if [ "$attempt" -ge "$ATTEMPTS" ]; then
    echo "postdeploy: $AZURE_FUNCTION_APP_NAME has no blobs_extension key after $ATTEMPTS tries." >&2
    echo "Check that $FUNCTION is listed in the portal (Functions), call the app once" >&2
    echo "(e.g. \$GATEWAY_BASE_URL/health), then run: azd hooks run postdeploy" >&2
    exit 1
  fi
  echo "postdeploy: waiting for the host's blob webhook key ($attempt/$ATTEMPTS) ..."
  attempt=$((attempt + 1))
  sleep 10
done
unset key

az deployment group create \
  --subscription "$AZURE_SUBSCRIPTION_ID" \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "retrain-events-$(date +%Y%m%d%H%M%S)" \
  --template-file "$HERE/retrain-events.bicep" \
  --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
               systemTopicName="$AZURE_EVENTGRID_SYSTEM_TOPIC_NAME" \
               containerName="$CONTAINER" \
               functionName="$FUNCTION" \
  --output none
echo "postdeploy: BlobCreated events under $CONTAINER/ now reach $FUNCTION."
