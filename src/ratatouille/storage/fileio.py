"""PyIceberg's file access for the warehouse: local files with the ``os`` module, S3 with ``pyarrow.fs``.

PyIceberg's own ``PyArrowFileIO`` lives in a module that imports ``pyarrow.dataset`` (and pandas,
when it is installed): 0.1-0.2 s on every run that writes. The catalog only reads and writes
metadata files, manifests and Parquet footers, which needs far less. The catalog is configured
with ``py-io-impl`` pointing here (``Lakehouse.io_properties``); a ``catalog.properties`` entry of
the user's still wins.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pyiceberg.io import FileIO, InputFile, InputStream, OutputFile, OutputStream

from ratatouille.storage.files import s3_filesystem

if TYPE_CHECKING:
    import pyarrow.fs as pafs

IMPL = "ratatouille.storage.fileio.WarehouseFileIO"


class WarehouseFileIO(FileIO):
    """Reads, writes and deletes files of ``file://`` (or plain) paths and ``s3://`` URIs."""

    def __init__(self, properties: dict[str, str] | None = None) -> None:
        super().__init__(properties or {})
        self._s3: pafs.S3FileSystem | None = None

    def new_input(self, location: str) -> InputFile:
        """A file to read."""
        if _is_s3(location):
            return _S3InputFile(location, self._filesystem())
        return _LocalInputFile(location)

    def new_output(self, location: str) -> OutputFile:
        """A file to write."""
        if _is_s3(location):
            return _S3OutputFile(location, self._filesystem())
        return _LocalOutputFile(location)

    def delete(self, location: str | InputFile | OutputFile) -> None:
        """Delete a file.

        Raises:
            FileNotFoundError: there is no such file.
        """
        path = location if isinstance(location, str) else location.location
        if _is_s3(path):
            self._filesystem().delete_file(_key(path))
        else:
            os.remove(_local_path(path))

    def _filesystem(self) -> pafs.S3FileSystem:
        if self._s3 is None:
            props = self.properties
            self._s3 = s3_filesystem(
                endpoint=props.get("s3.endpoint"),
                region=props.get("s3.region", "us-east-1"),
                access_key=props.get("s3.access-key-id"),
                secret_key=props.get("s3.secret-access-key"),
                virtual_addressing=props.get("s3.force-virtual-addressing", "false").lower() == "true",
            )
        return self._s3


def _is_s3(location: str) -> bool:
    return location.startswith(("s3://", "s3a://", "s3n://"))


def _key(location: str) -> str:
    """``bucket/key`` of an S3 URI, as pyarrow wants it."""
    parsed = urlparse(location)
    return f"{parsed.netloc}{parsed.path}"


def _local_path(location: str) -> str:
    return urlparse(location).path if location.startswith("file:") else location


class _LocalInputFile(InputFile):
    def __len__(self) -> int:
        return os.path.getsize(_local_path(self.location))

    def exists(self) -> bool:
        return os.path.isfile(_local_path(self.location))

    def open(self, seekable: bool = True) -> InputStream:
        stream: Any = open(_local_path(self.location), "rb")  # the caller closes it
        return stream  # type: ignore[no-any-return]


class _LocalOutputFile(OutputFile):
    def __len__(self) -> int:
        return os.path.getsize(_local_path(self.location))

    def exists(self) -> bool:
        return os.path.isfile(_local_path(self.location))

    def to_input_file(self) -> InputFile:
        return _LocalInputFile(self.location)

    def create(self, overwrite: bool = False) -> OutputStream:
        path = _local_path(self.location)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        stream: Any = open(path, "wb" if overwrite else "xb")  # the caller closes it
        return stream  # type: ignore[no-any-return]


class _S3InputFile(InputFile):
    def __init__(self, location: str, fs: pafs.S3FileSystem) -> None:
        super().__init__(location)
        self._fs = fs

    def __len__(self) -> int:
        return int(self._fs.get_file_info(_key(self.location)).size or 0)

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return bool(self._fs.get_file_info(_key(self.location)).type == pafs.FileType.File)

    def open(self, seekable: bool = True) -> InputStream:
        key = _key(self.location)
        stream: Any = self._fs.open_input_file(key) if seekable else self._fs.open_input_stream(key)
        return stream  # type: ignore[no-any-return]


class _S3OutputFile(OutputFile):
    def __init__(self, location: str, fs: pafs.S3FileSystem) -> None:
        super().__init__(location)
        self._fs = fs

    def __len__(self) -> int:
        return len(self.to_input_file())

    def exists(self) -> bool:
        return self.to_input_file().exists()

    def to_input_file(self) -> InputFile:
        return _S3InputFile(self.location, self._fs)

    def create(self, overwrite: bool = False) -> OutputStream:
        if not overwrite and self.exists():
            raise FileExistsError(f"{self.location} already exists")
        stream: Any = self._fs.open_output_stream(_key(self.location))
        return stream  # type: ignore[no-any-return]
