import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tnlm.data.files import DataError
from tnlm.data.sources import BuiltinSource, FileSource, HFSource, build_source


def read_all(source):
    return list(source.documents())


def test_jsonl_plain_gz_zst_and_malformed_lines(tmp_path):
    rows = [{"text": f"document {i}", "id": f"d{i}", "lang": "en"} for i in range(3)]
    lines = [json.dumps(r) for r in rows]
    (tmp_path / "a.jsonl").write_text("\n".join(lines[:2] + ["{not json", "[1, 2]", '{"other": 1}']) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(lines[2] + "\n")
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((lines[0] + "\n").encode()))
    source = FileSource(paths=[str(tmp_path)], id_key="id")
    docs = read_all(source)
    assert [d.text for d in docs] == ["document 0", "document 1", "document 2", "document 0"]
    assert docs[0].id == "d0" and docs[0].metadata["lang"] == "en"
    assert source.stats.reasons == {"malformed_lines": 2, "missing_text": 1}
    assert source.stats.docs_in == 7 and source.stats.docs_out == 4


def test_text_parquet_and_json_list(tmp_path):
    (tmp_path / "t.txt").write_text("first story<|endoftext|>\nsecond story<|endoftext|>\n")
    pq.write_table(pa.table({"content": ["row one", "row two"]}), tmp_path / "p.parquet")
    (tmp_path / "poems.json").write_text(json.dumps([{"paragraphs": ["床前明月光，", "疑是地上霜。"]}]), encoding="utf-8")
    texts = [d.text for d in read_all(FileSource(paths=[str(tmp_path / "t.txt")], delimiter="<|endoftext|>"))]
    assert texts == ["first story", "second story"]
    assert [d.text for d in read_all(FileSource(paths=[str(tmp_path / "*.parquet")], text_key="content"))] == ["row one", "row two"]
    poems = read_all(FileSource(paths=[str(tmp_path / "poems.json")], text_key="paragraphs"))
    assert poems[0].text == "床前明月光，\n疑是地上霜。"


def test_unreadable_file_is_counted_not_fatal(tmp_path):
    (tmp_path / "bad.jsonl.gz").write_bytes(b"this is not gzip")
    (tmp_path / "good.jsonl").write_text('{"text": "fine"}\n')
    source = FileSource(paths=[str(tmp_path)])
    assert [d.text for d in read_all(source)] == ["fine"]
    assert source.stats.counters["unreadable_files"] == 1


def test_missing_paths_and_unknown_source_type_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no input files match"):
        FileSource(paths=[str(tmp_path / "nothing-*.jsonl")])
    with pytest.raises(DataError, match="unknown source type"):
        build_source({"type": "ftp"})


def test_hf_datasets_source_streams_local_json(tmp_path):
    for part in range(2):
        (tmp_path / f"part{part}.jsonl").write_text("".join(json.dumps({"text": f"p{part} r{i}"}) + "\n" for i in range(3)))
    source = HFSource(path="json", data_files=[str(tmp_path / "part0.jsonl"), str(tmp_path / "part1.jsonl")])
    assert len(source.shards()) == 2
    assert sorted(d.text for d in read_all(source)) == sorted(f"p{p} r{i}" for p in range(2) for i in range(3))


def test_builtin_corpus_needs_no_download():
    source = BuiltinSource(kind="all", num_shards=2, max_files=6)
    docs = read_all(source)
    pydoc = [d for d in docs if d.metadata["source"] == "pydoc"]
    code = [d for d in docs if d.metadata["source"] == "stdlib-source"]
    assert len(pydoc) > 50 and "assert" in {d.id.split(":")[1] for d in pydoc}
    assert len(code) == 6 and all("import" in d.text or "def " in d.text for d in code)
    assert len({d.id for d in docs}) == len(docs)


NESTED_MODULE = '''"""module doc"""
import x
def f():
    """f doc"""
    class Inner:
        """inner doc"""
        def m(self):
            """m doc"""
            lambda: [(lambda y: y) for _ in ()]
    try:
        def in_try(): "in try"
    except E:
        def in_handler(): "in handler"
    else:
        async def in_else(): "in else"
    finally:
        def in_finally(): pass
if x:
    with y:
        for i in z:
            def deep(): "deep"
        else:
            class Deep: "deep class"
    while q:
        def w(): "w"
match p:
    case [1, *_] if g:
        def in_case(): "in case"
    case _:
        class C2:
            "c2"
            async def am(): "am"
class Last:
    "last"
    x = 1
'''


def test_docstring_walk_matches_ast_walk_order():
    """The statement-only walk finds the same definitions, in the same order, as ast.walk: on a module
    nesting definitions in every kind of block, and on standard-library modules."""
    import ast

    from tnlm.data.sources import _definitions, _definitions_reference, stdlib_files

    tree = ast.parse(NESTED_MODULE)
    names = [getattr(n, "name", "<module>") for n in _definitions(tree)]
    assert names == [getattr(n, "name", "<module>") for n in _definitions_reference(tree)]
    assert len(names) == 15 and names[:3] == ["<module>", "f", "Last"]
    for path in stdlib_files()[::40]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert _definitions(tree) == _definitions_reference(tree), path


def test_builtin_shards_are_balanced_by_bytes():
    """Every standard-library file in exactly one shard, in the library's order within it; shard 0
    holds the help topics too; the shards' bytes within 5% of each other."""
    from tnlm.data.sources import stdlib_files

    source = BuiltinSource(kind="all", num_shards=8)
    members, loads = source._assignment
    files = stdlib_files()
    assert sorted(p for m in members for p in m) == sorted(files)
    assert all(m == sorted(m, key=files.index) for m in members)
    assert source.shard_bytes(source.shards()) == loads and max(loads) < 1.05 * min(loads)
    first = [d.id for d in source.read("0/8")]
    assert first[0].startswith("pydoc:") and sum(i.startswith("source:") for i in first) == len(members[0])


def test_split_files_spreads_one_file_over_shards(tmp_path):
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(10)] + ["{bad"]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    source = FileSource(paths=[str(tmp_path / "big.jsonl")], split_files=3)
    assert len(source.shards()) == 3
    parts = [[d.text for d in source.read(shard)] for shard in source.shards()]
    assert parts[0] == ["doc 0", "doc 3", "doc 6", "doc 9"] and len(parts[1]) == len(parts[2]) == 3
    assert sorted(sum(parts, [])) == sorted(f"doc {i}" for i in range(10))
    assert source.stats.reasons["malformed_lines"] == 1 and source.stats.docs_out == 10


def test_a_bad_byte_costs_only_its_own_line(tmp_path):
    """Issue 19.1: a non-UTF-8 byte used to drop the rest of the file with exit 0."""
    rows = [json.dumps({"text": f"doc {i}"}).encode() for i in range(6)]
    rows[2] = b'{"text": "bad \xff byte"}'
    (tmp_path / "plain.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    with gzip.open(tmp_path / "packed.jsonl.gz", "wb") as f:
        f.write(b"\n".join(rows) + b"\n")
    (tmp_path / "story.txt").write_bytes(b"first ok|second \xff bad|third ok")
    for name in ("plain.jsonl", "packed.jsonl.gz"):
        source = FileSource(paths=[str(tmp_path / name)])
        assert [d.text for d in read_all(source)] == ["doc 0", "doc 1", "doc 3", "doc 4", "doc 5"], name
        assert source.stats.reasons == {"invalid_utf8": 1} and source.stats.docs_in == 6
        assert source.stats.examples[0]["id"].endswith(f"{name}:3")  # the third line: lines count from 1
    repaired = FileSource(paths=[str(tmp_path / "plain.jsonl")], encoding_errors="replace")
    assert [d.text for d in read_all(repaired)][2] == "bad \ufffd byte"
    assert repaired.stats.counters["repaired_utf8"] == 1 and not repaired.stats.reasons
    story = FileSource(paths=[str(tmp_path / "story.txt")], delimiter="|")
    assert [d.text for d in read_all(story)] == ["first ok", "third ok"] and story.stats.reasons == {"invalid_utf8": 1}
    (tmp_path / "rows.json").write_bytes(b'[{"text": "one"}, {"text": "tw\xffo"}, 3]')
    whole = FileSource(paths=[str(tmp_path / "rows.json")])
    assert read_all(whole) == [] and whole.stats.counters["unreadable_files"] == 1  # one JSON value: counted whole
    repaired = FileSource(paths=[str(tmp_path / "rows.json")], encoding_errors="replace")
    assert [d.text for d in read_all(repaired)] == ["one", "tw\ufffdo"] and repaired.stats.reasons == {"malformed_rows": 1}


def test_existing_paths_are_taken_literally_and_only_wildcards_expand(tmp_path):
    """Issue 19.3: `x[1].jsonl` used to read x1.jsonl."""
    (tmp_path / "x[1].jsonl").write_text('{"text": "bracketed"}\n')
    (tmp_path / "x1.jsonl").write_text('{"text": "plain"}\n')
    assert [d.text for d in read_all(FileSource(paths=[str(tmp_path / "x[1].jsonl")]))] == ["bracketed"]
    assert [d.text for d in read_all(FileSource(paths=[str(tmp_path / "x[0-9].jsonl")]))] == ["plain"]
    assert len(read_all(FileSource(paths=[str(tmp_path / "x*.jsonl")]))) == 2
    with pytest.raises(DataError, match="does not exist"):
        FileSource(paths=[str(tmp_path / "y.jsonl")])
    with pytest.raises(DataError, match="no input files match"):
        FileSource(paths=[str(tmp_path / "y[1].jsonl")])


def test_folders_and_globs_skip_tnlm_outputs_inside_them(tmp_path):
    """Issue 19.2: a pipeline's output folder inside the input folder is not read back as input."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "raw"}\n')
    out = tmp_path / "in" / "clean"
    (out / "_work" / "stage0").mkdir(parents=True)
    (out / "_work" / "config.json").write_text("{}")
    (out / "_work" / "stage0" / "shard-00000.jsonl").write_text('{"text": "intermediate", "id": "x"}\n')
    (out / "shard-00000.jsonl").write_text('{"text": "cleaned", "id": "y"}\n')
    (out / "report.json").write_text("{}")
    assert [d.text for d in read_all(FileSource(paths=[str(tmp_path / "in")]))] == ["raw"]
    # asked for by name, an output folder is read: its documents, not its _work or its report
    assert [d.text for d in read_all(FileSource(paths=[str(out)]))] == ["cleaned"]
    assert [d.text for d in read_all(FileSource(paths=[str(out / "**" / "*.json*")]))] == ["cleaned"]
