"""Model files whose bytes depend only on the model, so that DVC hashes repeat.

Keras (`.keras`), skops (`.skops`) and our MLflow model archives are zip files that
record more than the model: each member's modification time, Keras' `date_saved`,
MLflow's `utc_time_created` and `model_uuid`, and the memory addresses (`id()`) of
the saved Python objects, which Keras writes as `shared_object_id` and skops as
`__id__` and as the names of its `.npy` members. `rewrite_archive` replaces all of
them by values that repeat: the same training gives the same bytes, and
`dvc repro -f` leaves dvc.lock unchanged.
"""

import io
import json
import re
import zipfile
from pathlib import Path

# The earliest time a zip member can record (the format counts from 1980).
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# rw-r--r--, whatever the umask of the process that saved the file.
FILE_MODE = 0o100644 << 16
# Object ids: Keras' `"shared_object_id": <id>`, skops' `"__id__": <id>` and the
# `<id>.npy` members that skops names after the array's id.
OBJECT_ID = re.compile(r'(?<="shared_object_id": )\d+|(?<="__id__": )\d+|\d+(?=\.npy\b)')
# MLmodel lines that record when and as which instance the model was saved; MLflow
# fills both in again when `track` logs the model.
SAVE_IDENTITY = re.compile(rb"^(utc_time_created|model_uuid): .*\n", re.MULTILINE)
NESTED_ARCHIVES = (".keras", ".skops", ".zip")


class _Renumbering:
    """Object ids in the order they first appear: 1, 2, 3, ...

    One renumbering serves a whole archive, so that a skops `__id__` and its `.npy`
    member keep pointing at each other.
    """

    def __init__(self) -> None:
        self.numbers: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return OBJECT_ID.sub(self._number, text)

    def _number(self, match: re.Match[str]) -> str:
        return self.numbers.setdefault(match.group(0), str(len(self.numbers) + 1))


def _member_content(name: str, content: bytes, renumber: _Renumbering) -> bytes:
    if name.endswith(NESTED_ARCHIVES) and zipfile.is_zipfile(io.BytesIO(content)):
        return reproducible_archive(content)
    if name == "metadata.json":
        metadata = json.loads(content)
        metadata.pop("date_saved", None)  # read by nothing that loads the model
        return json.dumps(metadata).encode()
    if name.endswith(".json"):
        return renumber(content.decode()).encode()
    if name.endswith("MLmodel"):
        return SAVE_IDENTITY.sub(b"", content)
    return content


def reproducible_archive(content: bytes) -> bytes:
    """The zip archive `content` with fixed times, renumbered ids and no save dates."""
    renumber = _Renumbering()
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as source:
        members = source.infolist()
        # The JSON that names the ids first, so that the `.npy` members follow its order.
        members.sort(key=lambda member: not member.filename.endswith(".json"))
        rewritten = [
            (
                renumber(member.filename) if member.filename.endswith(".npy") else member.filename,
                member,
                _member_content(member.filename, source.read(member), renumber),
            )
            for member in members
        ]
    with zipfile.ZipFile(output, "w") as archive:
        for name, member, data in sorted(rewritten, key=lambda entry: entry[0]):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = member.compress_type
            info.external_attr = FILE_MODE
            archive.writestr(info, data)
    return output.getvalue()


def rewrite_archive(path: Path) -> None:
    """Make the zip archive at `path` reproducible, in place (call it on a temporary
    file before its atomic rename)."""
    path.write_bytes(reproducible_archive(path.read_bytes()))
