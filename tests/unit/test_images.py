"""scripts/images: the Containerfile subset it reads and the cache key that decides when an image is rebuilt."""

import importlib.machinery
import importlib.util
import io
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load():
    loader = importlib.machinery.SourceFileLoader("matrix_stack_images", str(REPO / "scripts" / "images"))
    spec = importlib.util.spec_from_loader("matrix_stack_images", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


images = load()


def test_parse_joins_continuations_and_skips_comments(tmp_path):
    cf = tmp_path / "Containerfile"
    cf.write_text("# comment\nFROM debian:bookworm\n\nRUN a \\\n  # inside\n && b\nenv A=1 B=\"two words\"\n"
                  'CMD ["x", "y"]\n')
    assert images.parse_containerfile(cf) == [
        ("FROM", "debian:bookworm"), ("RUN", "a  && b"), ("ENV", 'A=1 B="two words"'), ("CMD", '["x", "y"]')]


def test_parse_refuses_a_dangling_continuation(tmp_path):
    cf = tmp_path / "Containerfile"
    cf.write_text("FROM debian:bookworm\nRUN a \\\n")
    with pytest.raises(SystemExit):
        images.parse_containerfile(cf)


def test_substitute_and_key_values():
    env = {"A": "1", "EMPTY": ""}
    assert images.substitute("$A-${A}-${EMPTY:-d}-${MISSING:-m}-$MISSING.", env) == "1-1-d-m-."
    assert images.parse_kv('PATH=/x:$P B="two words"', {"P": "/bin"}) == [("PATH", "/x:/bin"), ("B", "two words")]
    assert images.parse_kv("LEGACY some value", {}) == [("LEGACY", "some value")]
    assert images.exec_form('["a", "b c"]') == ["a", "b c"]
    assert images.exec_form("echo $HOME") == ["/bin/sh", "-c", "echo $HOME"]


def spec_for(tmp_path, text):
    (tmp_path / "Containerfile").write_text(text)
    return {"containerfile": tmp_path / "Containerfile", "context": tmp_path, "ref": "localhost/x:1", "args": {}}


def test_cache_key_follows_copied_files_only(tmp_path):
    (tmp_path / "in.txt").write_text("one")
    (tmp_path / "unrelated.txt").write_text("a")
    spec = spec_for(tmp_path, "FROM debian:bookworm\nCOPY in.txt /in.txt\n")
    key = images.input_key("x", spec)
    assert images.input_key("x", spec) == key
    (tmp_path / "unrelated.txt").write_text("b")
    assert images.input_key("x", spec) == key
    (tmp_path / "in.txt").write_text("two")
    assert images.input_key("x", spec) != key
    changed = images.input_key("x", spec)
    assert images.input_key("x", {**spec, "args": {"V": "2"}}) != changed
    assert images.input_key("x", {**spec, "ref": "localhost/x:2"}) != changed


def tarball(path, content, mtime):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("galaxy.yml")
        info.size, info.mtime = len(content), mtime
        tar.addfile(info, io.BytesIO(content))


def test_cache_key_of_a_tarball_ignores_its_timestamps(tmp_path):
    spec = spec_for(tmp_path, "FROM debian:bookworm\nCOPY matrix-stack-*.tar.gz /tmp/\n")
    tarball(tmp_path / "matrix-stack-0.1.0.tar.gz", b"v: 1", 1)
    key = images.input_key("x", spec)
    time.sleep(0.01)
    tarball(tmp_path / "matrix-stack-0.1.0.tar.gz", b"v: 1", 2)
    assert images.input_key("x", spec) == key
    tarball(tmp_path / "matrix-stack-0.1.0.tar.gz", b"v: 2", 2)
    assert images.input_key("x", spec) != key
