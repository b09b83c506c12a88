"""Chat data: dialogues of {"role", "content"} messages, read and checked before anything trains.

A dialogue is one record's `messages` list (the column can be renamed), as the common open SFT sets
store them. Where the records come from:

    chats.jsonl, data/*.jsonl.gz, a folder      JSON Lines, one {"messages": [...]} object a line
    chats.json                                  a JSON array of such objects
    chats.parquet                               a Parquet table with a messages column (needs pyarrow)
    a folder written by datasets' save_to_disk  a Hugging Face dataset (a DatasetDict: data.split)
    hf:NAME or hf:NAME:CONFIG                   datasets.load_dataset(NAME, CONFIG, split=data.split)
    builtin:pydoc-chat                          the small chat set that ships with tnlm

Every problem is a DataError naming the record (file and line, or dataset and row) and what to fix: a
message with an unknown role, an empty dialogue, a dialogue without an assistant message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tnlm.chat_template import ASSISTANT_ROLE, ROLES
from tnlm.data.files import open_text
from tnlm.data.paths import expand_paths
from tnlm.errors import DataError

BUILTIN = {"pydoc-chat": Path(__file__).with_name("pydoc_chat.jsonl")}
SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Dialogue:
    messages: tuple[dict[str, str], ...]  # each exactly {"role", "content"}
    where: str  # "chats.jsonl:12", "hf:NAME[3]": for error messages


def read_dialogues(path: str, *, column: str = "messages", split: str = "train") -> list[Dialogue]:
    """Every dialogue of `path` (see the module docstring for the forms), checked."""
    dialogues = [_check(record, where, column=column) for record, where in _records(path, split=split)]
    if not dialogues:
        raise DataError(f"{path} holds no dialogues: give JSON Lines of {{\"{column}\": [...]}} records")
    return dialogues


def _records(path: str, *, split: str) -> Iterator[tuple[Any, str]]:
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name not in BUILTIN:
            raise DataError(f"unknown built-in chat set {name!r}; tnlm ships: {', '.join(BUILTIN)}")
        yield from _jsonl(BUILTIN[name])
    elif path.startswith("hf:"):
        yield from _hub_dataset(path.removeprefix("hf:"), split=split)
    elif _is_saved_dataset(Path(path)):
        yield from _saved_dataset(Path(path), split=split)
    else:
        for file in expand_paths([path], suffixes=SUFFIXES):
            yield from _file_records(Path(file))


def _file_records(file: Path) -> Iterator[tuple[Any, str]]:
    name = file.name.lower()
    if name.endswith(".parquet"):
        yield from _parquet(file)
    elif name.endswith(".json"):
        yield from _json_array(file)
    else:
        yield from _jsonl(file)


def _jsonl(file: Path) -> Iterator[tuple[Any, str]]:
    try:
        with open_text(file) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line), f"{file}:{number}"
                except json.JSONDecodeError as e:
                    raise DataError(f"{file}:{number} is not valid JSON ({e.msg}); fix or remove that line") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{file} is not UTF-8 text ({e.reason}); save it as UTF-8") from None


def _json_array(file: Path) -> Iterator[tuple[Any, str]]:
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{file} is not a valid UTF-8 JSON file ({e}); JSON Lines files end in .jsonl") from None
    if not isinstance(records, list):
        raise DataError(f"{file} holds a JSON {type(records).__name__}; give a list of dialogue records "
                        "(or JSON Lines, one record a line, in a .jsonl file)")  # fmt: skip
    for i, record in enumerate(records):
        yield record, f"{file}[{i}]"


def _parquet(file: Path) -> Iterator[tuple[Any, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{file}: reading Parquet needs pyarrow: pip install 'tnlm[data]'") from None
    for i, record in enumerate(pq.read_table(file).to_pylist()):
        yield record, f"{file}[{i}]"


def _is_saved_dataset(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).is_file() for n in ("dataset_dict.json", "dataset_info.json"))


def _saved_dataset(folder: Path, *, split: str) -> Iterator[tuple[Any, str]]:
    import datasets

    data = datasets.load_from_disk(str(folder))
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f"{folder} has the splits {', '.join(data)}, not {split!r}: set data.split")
        data = data[split]
    for i, record in enumerate(data):
        yield record, f"{folder}[{i}]"


def _hub_dataset(spec: str, *, split: str) -> Iterator[tuple[Any, str]]:
    import datasets

    name, _, config = spec.partition(":")
    try:
        data = datasets.load_dataset(name, config or None, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as e:
        raise DataError(f"cannot load the dataset {name!r} (split {split!r}): {str(e).splitlines()[0]}") from None
    for i, record in enumerate(data):
        yield record, f"hf:{spec}[{i}]"


def _check(record: Any, where: str, *, column: str) -> Dialogue:
    if not isinstance(record, dict) or not isinstance(record.get(column), list):
        keys = f"its keys: {', '.join(map(str, record))}" if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where} has no {column!r} list of messages ({keys}); set data.column to the key "
                        "that holds them")  # fmt: skip
    messages = record[column]
    if not messages:
        raise DataError(f"{where}: the dialogue is empty; remove it or give it messages")
    checked = tuple(_check_message(m, i, where) for i, m in enumerate(messages))
    if not any(m["role"] == ASSISTANT_ROLE for m in checked):
        raise DataError(f"{where}: the dialogue has no assistant message, so there is nothing to learn from it; "
                        "remove it or add the answer")  # fmt: skip
    return Dialogue(messages=checked, where=where)


def _check_message(message: Any, index: int, where: str) -> dict[str, str]:
    if not isinstance(message, dict):
        raise DataError(f"{where}: message {index} is a {type(message).__name__}, not a {{role, content}} object")
    if "role" not in message and {"from", "value"} <= message.keys():
        raise DataError(f"{where}: message {index} is ShareGPT-style ({{from, value}}); convert the messages to "
                        "{role: system|user|assistant, content}")  # fmt: skip
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise DataError(f"{where}: message {index} has role {role!r}; use one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise DataError(f"{where}: message {index} ({role}) needs a string content, got {type(content).__name__}")
    return {"role": role, "content": content}
