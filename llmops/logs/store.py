"""Log stores: Azure Blob Storage (Azurite locally) or a local folder with the same layout.

The adapters are thin on purpose: put, list, get. Batching, spooling and replay live in
`writer.py`; window reads in `reader.py`. `azure.storage.blob` is imported on first use.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmops.settings import LogSettings

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient


class LogStore(Protocol):
    """A flat namespace of named byte blobs inside one container."""

    description: str

    async def put(self, name: str, data: bytes, content_type: str | None = None) -> str | None:
        """Write `data` under `name`, replacing what was there (so retries never duplicate);
        `content_type` is what a browser is told when it opens the blob. Returns the new
        version's ETag when the store has ETags."""
        ...

    async def list(self, prefix: str) -> list[str]:
        """The names that start with `prefix`, sorted."""
        ...

    async def get(self, name: str) -> bytes:
        """The bytes stored under `name`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class LocalStore:
    """A folder standing in for a container: `<root>/<container>/<name>`."""

    def __init__(self, root: str | Path, container: str) -> None:
        self.root = Path(root) / container
        self.description = f"local folder {self.root}"

    async def put(self, name: str, data: bytes, content_type: str | None = None) -> str | None:
        await asyncio.to_thread(_write_atomically, self._path(name), data)
        return None

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"blob name {name!r} leaves the container")
        return self.root / name

    async def list(self, prefix: str) -> list[str]:
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        names = (p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(n for n in names if n.startswith(prefix) and not n.endswith(".tmp"))

    async def get(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    async def aclose(self) -> None:
        return None


class BlobStore:
    """One Blob Storage container, by connection string or by Entra ID (managed identity)."""

    def __init__(self, settings: LogSettings, container: str | None = None) -> None:
        self._settings = settings
        self._container_name = container or settings.container
        self._client: ContainerClient | None = None
        self._credential: Any = None
        self._created = False
        where = settings.blob_service_uri or "connection string"
        self.description = f"blob container {self._container_name} ({where})"

    def _container(self) -> ContainerClient:
        if self._client is None:
            from azure.storage.blob.aio import ContainerClient

            timeout = self._settings.upload_timeout_s
            if self._settings.connection_string:
                self._client = ContainerClient.from_connection_string(
                    self._settings.connection_string,
                    self._container_name,
                    retry_total=0,  # the writer retries: spool and replay
                    connection_timeout=5,
                    read_timeout=timeout,
                )
            else:
                from azure.identity.aio import DefaultAzureCredential

                credential = self._credential = DefaultAzureCredential(
                    managed_identity_client_id=self._settings.managed_identity_client_id
                )
                assert self._settings.blob_service_uri
                self._client = ContainerClient(
                    self._settings.blob_service_uri,
                    self._container_name,
                    credential=credential,
                    retry_total=0,  # the writer retries: spool and replay
                    connection_timeout=5,
                    read_timeout=timeout,
                )
        return self._client

    async def put(self, name: str, data: bytes, content_type: str | None = None) -> str | None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        blob = self._container().get_blob_client(name)
        settings = ContentSettings(content_type=content_type) if content_type else None
        try:
            result = await blob.upload_blob(data, overwrite=True, content_settings=settings)
        except ResourceNotFoundError:
            if self._created:
                raise
            try:
                await self._container().create_container()
            except ResourceExistsError:
                pass
            self._created = True
            result = await blob.upload_blob(data, overwrite=True, content_settings=settings)
        etag = result.get("etag")
        return str(etag) if etag else None

    async def list(self, prefix: str) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return sorted(
                [b async for b in self._container().list_blob_names(name_starts_with=prefix)]
            )
        except ResourceNotFoundError:
            return []

    async def get(self, name: str) -> bytes:
        downloader = await self._container().download_blob(name)
        return await downloader.readall()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
        if self._credential is not None:
            credential, self._credential = self._credential, None
            await credential.close()


def store_for(settings: LogSettings, container: str | None = None) -> LogStore:
    """The store the settings configure: Blob Storage when it is set up, else a local folder."""
    if settings.storage == "blob":
        return BlobStore(settings, container)
    return LocalStore(settings.local_dir, container or settings.container)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
