"""Hyperparameter constants and their `--name=value` command-line overrides.

A script keeps its hyperparameters as UPPER_CASE module constants with a short comment each
(nanoGPT style). `setup(globals())` reads `sys.argv`, type-checks every override against the
constant's default, writes the new values back into the script's globals and returns the
effective config as a dict. Each constant's annotation is its domain (common/domains.py: `LATENT_DIM: Int(1) =
100`); `check` holds every constant to its domain before anything is loaded, allocated or written. Bad input is
one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import sys
import tokenize
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from tqdm import tqdm

from common import exits, files, restarts
from common.domains import Domain

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_CONST_RE = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]+)?=")
RENAMED = {
    "FID_SAMPLES": "EVAL_SAMPLES"
}  # old constant name -> new: still taken on the command line and from checkpoints
_SAID: set[str] = set()  # the renames already noted by this process
OVERRIDDEN = "_overridden"  # the namespace key of the constants set on the command line
ROOT = Path(__file__).resolve().parents[1]  # where the training scripts live
AUTO_OR_INT = ("EVAL_EVERY",)  # "auto" (common/cadence.py's budget) or a whole number
AUTO_OR_BOOL = ("AMP", "CHANNELS_LAST", "CUDNN_BENCHMARK", "FUSED_ADAM", "COMPILE")  # speed switches: auto|true|false
DOCS = {  # each training script's page, named on the last line of its --help and in its docstring
    "VAE-MNIST.py": "docs/vae.md",
    "GAN-MNIST.py": "docs/gan.md",
    "DCGAN-MNIST.py": "docs/dcgan.md",
    "CDCGAN-MNIST.py": "docs/cdcgan.md",
    "DCGAN-CelebA.py": "docs/dcgan-celeba.md",
}


def fail(message: str) -> NoReturn:
    """Print a one-line error and exit with code 2 (bad input), without a traceback."""
    tqdm.write(f"error: {message}", file=sys.stderr)  # on a line of its own, below an open progress bar
    restarts.record(exits.BAD_INPUT)  # under torchrun --max-restarts: said once, not again at each restart
    raise SystemExit(exits.BAD_INPUT)


def constants(namespace: dict[str, Any]) -> dict[str, Any]:
    """The UPPER_CASE constants of a script namespace that are plain values, in file order."""
    return {
        k: v
        for k, v in namespace.items()
        if k.isupper() and not k.startswith("_") and isinstance(v, (bool, int, float, str))
    }


def comments(source_file: str | Path) -> dict[str, tuple[str, str]]:
    """Map each constant in a source file to (its trailing comment, its group heading)."""
    found: dict[str, tuple[str, str]] = {}
    group = ""
    text = Path(source_file).read_text()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# ---"):
            group = stripped.strip("#- ").strip()
            continue
        match = _CONST_RE.match(line)
        if not match:
            continue
        comment = ""
        try:
            for tok in tokenize.generate_tokens(io.StringIO(line).readline):
                if tok.type == tokenize.COMMENT:
                    comment = tok.string.lstrip("# ").strip()
        except (tokenize.TokenError, IndentationError):
            pass
        found[match.group(1)] = (comment, group)
    return found


def convert(name: str, raw: str, default: Any) -> Any:
    """Convert a command-line string to the type of `default`, or exit with a clear error."""
    kind = type(default)
    auto = name in AUTO_OR_BOOL  # common/speed.py's switches: "auto" or a bool, whatever the default
    if (auto or name in AUTO_OR_INT) and raw.strip().lower() == "auto":
        return "auto"
    if name in AUTO_OR_INT:
        with contextlib.suppress(ValueError):  # a number of more digits than int() takes (4,300)
            if raw.strip().isdigit():
                return int(raw)
        fail(f"--{name.lower()} expects auto or a whole number (0 or more), got {raw!r}")
    if kind is bool or auto:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        fail(f"--{name.lower()} expects {'auto, ' if auto else ''}true or false, got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            fail(f"--{name.lower()} expects an integer, got {raw!r}")
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            fail(f"--{name.lower()} expects a number, got {raw!r}")
    return raw


def help_text(namespace: dict[str, Any]) -> str:
    """The --help page: the script's docstring, every constant, default and comment, then its docs page."""
    doc = (namespace.get("__doc__") or "").strip()
    notes = comments(namespace["__file__"]) if namespace.get("__file__") else {}
    lines = [doc, "", "Options (any constant, as --lower_case_name=value):"]
    group = None
    options = {name: f"--{name.lower()}={value!r}" for name, value in constants(namespace).items()}
    width, domains = max(map(len, options.values()), default=0), declared(namespace)
    for name, option in options.items():
        comment, heading = notes.get(name, ("", ""))
        if heading != group:
            group = heading
            lines.append(f"\n  [{heading}]" if heading else "")
        domain = f"{'; ' if comment else ''}{domains[name]}" if name in domains else ""
        lines.append(f"  {option:<{width}}  {comment}{domain}".rstrip())
    page = DOCS.get(Path(namespace.get("__file__") or "").name)
    if page:
        lines += ["", f"docs: {page}"]
    return "\n".join(lines)


def parse(namespace: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """Apply `--name=value` overrides in `argv` to `namespace` and return the effective config."""
    defaults = constants(namespace)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(namespace))
        raise SystemExit(exits.DONE)
    updates: dict[str, Any] = {}
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            fail(f"arguments must look like --name=value, got {arg!r} (see --help)")
        key, raw = arg[2:].split("=", 1)
        name = upgrade_name(key.upper().replace("-", "_"), defaults)
        if name not in defaults:
            valid = ", ".join(f"--{k.lower()}" for k in defaults)
            fail(f"unknown option --{key}; valid options: {valid}")
        updates[name] = convert(name, raw, defaults[name])
    namespace.update(updates)
    namespace[OVERRIDDEN] = tuple(updates)  # what the command line set (e.g. --epochs beats the sample budget)
    return constants(namespace)


def upgrade_name(name: str, known: dict[str, Any]) -> str:
    """The current name of a renamed constant (said once per process), else `name`."""
    new = RENAMED.get(name)
    if new is None or new not in known:
        return name
    if name not in _SAID:
        _SAID.add(name)
        print(f"note: {name} (--{name.lower()}) is now called {new} (--{new.lower()}); the old name still works")
    return new


def upgrade(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """A saved config (a checkpoint's) with its renamed constants under their current names."""
    return {upgrade_name(key, current): value for key, value in saved.items()}


def declared(namespace: dict[str, Any]) -> dict[str, Domain]:
    """Each constant's domain: its annotation in the script (`NAME: Int(1) = 3`), where it has one."""
    notes = namespace.get("__annotations__")
    if notes is None and callable(namespace.get("__annotate__")):  # Python 3.14: module annotations are lazy
        notes = namespace["__annotate__"](1)  # annotationlib.Format.VALUE
    return {name: domain for name, domain in (notes or {}).items() if isinstance(domain, Domain)}


def hold(flag: str, value: Any, domain: Domain) -> Any:
    """A tool's flag (generate.py, bench.py, seeds.py) held to its domain: the value, or one line and exit 2."""
    if (problem := domain.problem(value)) is not None:
        fail(f"{flag}={value} {problem}")
    return value


def check(namespace: dict[str, Any]) -> None:
    """Exit with one line (exit 2) for the first constant outside its domain, naming its value and the domain."""
    values = constants(namespace)
    for name, domain in declared(namespace).items():
        if name in values and (problem := domain.problem(values[name])) is not None:
            value = values[name]
            plain = not isinstance(value, str) or (value.isprintable() and value.strip() == value != "")
            fail(f"--{name.lower()}={value if plain else repr(value)} {problem}")  # repr: '', a newline: one line


MIN_EVAL_SAMPLES = 6  # the k-NN scores need k + 1 images (common/prdc.py's K = 5); FID needs 2


def check_eval_samples(cfg: dict[str, Any]) -> None:
    """Exit with one line when the MNIST scripts' EVAL_SAMPLES is too few for the scores of an evaluation
    (any count, 0 too, where --eval_every=0 turns evaluation off)."""
    n, every = cfg.get("EVAL_SAMPLES"), cfg.get("EVAL_EVERY")
    if n is None or every is None or every == 0 or n >= MIN_EVAL_SAMPLES:
        return
    fail(
        f"--eval_samples={n} is too few: the scores need at least {MIN_EVAL_SAMPLES} images "
        f"(2,000 or more for a FID worth comparing); --eval_every=0 turns evaluation off"
    )


def setup(namespace: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line (sys.argv) into the script's constants, hold each to its domain, return the config."""
    restarts.said_before()  # a torchrun restart after an exit that no restart can fix: that exit again, silently
    cfg = parse(namespace, sys.argv[1:] if argv is None else argv)
    check(namespace)
    check_eval_samples(cfg)
    return cfg


def show(cfg: dict[str, Any]) -> str:
    """The effective config as aligned `name = value` lines, for printing at start."""
    width = max(len(k) for k in cfg) if cfg else 0
    return "\n".join(f"  {k.lower():<{width}} = {v!r}" for k, v in cfg.items())


def save(cfg: dict[str, Any], path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write the config (lower-case keys) plus `extra` facts to a JSON file."""
    record = {k.lower(): v for k, v in cfg.items()}
    record.update(extra or {})
    files.write_text(path, json.dumps(record, indent=2) + "\n", "the run's settings")


def load_script(name: str) -> ModuleType:
    """Import a hyphenated top-level training script (e.g. "DCGAN-MNIST.py") as a module; main() is not run."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_").removesuffix(".py"), ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def default_out_dir(script_file: str, dataset: str | None = None) -> Path:
    """outputs/<script name>, with the data set appended when it is not the script's own."""
    name = Path(script_file).stem
    if dataset and dataset != "mnist" and dataset.lower() not in name.lower():
        name = f"{name}-{dataset}"
    return Path("outputs") / name
