"""The dequantised-model cache of the embedded SmolLM2: a damaged cache folder (a cut weight file, a
garbled header of the right size, an edited config, a missing manifest) is rebuilt with one warning
and the model loads with the same weights; an error of the loader itself is not blamed on the
cache; the folder is found by the GGUF's content, not by where it is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fairlens.errors import ModelLoadError
from fairlens.models import EMBEDDED_MODELS, load_hf
from fairlens.models import gguf_cache as cache

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(smollm2) -> tuple[Path, Path, str]:
    """``(gguf, the real cache folder, weights_sha)``: built by the session's SmolLM2 fixture."""
    gguf = EMBEDDED_MODELS["smollm2-135m"].locate()
    folder = cache.cache_folder(gguf)
    assert cache.damage(folder) is None
    return gguf, folder, load_hf("smollm2-135m")[2].weights_sha


def _cut(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble(folder: Path) -> None:  # same size, the header garbled
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:64] = b"\xff" * 56  # the JSON header of the safetensors file
    path.write_bytes(bytes(data))


def _edit_config(folder: Path) -> None:  # same size, other content
    path = folder / "config.json"
    text = path.read_text()
    path.write_text(text.replace('"', "'", 1))


def _no_manifest(folder: Path) -> None:
    (folder / cache.MANIFEST).unlink()


@pytest.mark.parametrize("damage", [_cut, _garble, _edit_config, _no_manifest])
def test_damaged_cache_is_rebuilt_with_one_warning(built, damage, tmp_path, monkeypatch) -> None:
    gguf, real, sha = built
    monkeypatch.setenv("FAIRLENS_CACHE", str(tmp_path / "cache"))
    mine = cache.cache_folder(gguf)
    assert mine.parent == tmp_path / "cache" / "models" and mine.name == real.name
    shutil.copytree(real, mine)
    cache.write_manifest(mine, gguf)  # the current form (the real one may predate the hashes)
    damage(mine)
    rebuilt: list[Path] = []

    def dequantise(src: Path, dest: Path) -> None:  # the real one takes ~20 s: copy its output
        assert src == gguf
        rebuilt.append(dest)
        shutil.copytree(real, dest)
        cache.write_manifest(dest, gguf)

    monkeypatch.setattr(cache, "dequantise", dequantise)
    with pytest.warns(UserWarning, match=r"model cache .* is damaged \(.*\); rebuilding it") as w:
        _, _, info = load_hf("smollm2-135m")
    assert sum("model cache" in str(x.message) for x in w) == 1 and rebuilt == [mine]
    assert info.weights_sha == sha and cache.damage(mine) is None
    load_hf("smollm2-135m")  # sound now: loaded as is
    assert rebuilt == [mine]


def test_cache_folder_follows_content_not_path(built, tmp_path) -> None:
    gguf, real, _ = built
    moved = tmp_path / "elsewhere" / gguf.name
    moved.parent.mkdir()
    shutil.copy(gguf, moved)
    assert cache.cache_folder(moved) == real  # a reinstall elsewhere reuses the cache
    with moved.open("r+b") as fh:  # other bytes (in the middle block the key samples): another key
        fh.seek(moved.stat().st_size // 2)
        fh.write(b"\x00" * 65536)
    assert cache.cache_folder(moved) != real


def test_a_loader_error_is_not_blamed_on_a_sound_cache(built, monkeypatch) -> None:
    _, real, _ = built
    monkeypatch.setattr(cache, "dequantise", lambda *a: pytest.fail("rebuilt a sound cache"))
    with pytest.raises(ModelLoadError, match="device_map"):
        load_hf("smollm2-135m", device_map="everywhere")
    assert cache.damage(real) is None
