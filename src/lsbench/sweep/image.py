"""``sweep image check|build``: lint an Apptainer definition file with our own parser, and build the worker image.

    sweep image check [containers/lsbench.def] [--syntax-only] [--json]
    sweep image build [containers/lsbench.def] [--output build/lsbench.sif] [--wheel WHEEL] [--dry-run]

The parser is a section splitter written for this purpose -- a header of ``Key: value`` lines that must begin with
``Bootstrap:``, then ``%section`` blocks -- because spython's recipe parser rejects ``Bootstrap: localimage``,
lower-cases ``From:`` lines and drops ``%arguments`` (toolkit-notes §5), so it cannot tell a good file from a broken
one. :func:`check_definition` reports the first problem as one line, ``<file>:<line>: <problem>``, which the CLI
prints with exit code 2.

Two groups of rules:

* **Syntax** (what ``apptainer build`` would reject or silently misread): the header, known header keys and
  bootstrap agents, ``From`` where the agent needs one, known section names, no repeated header key, ``%files``
  entries of one or two paths, ``%labels`` entries of a name and a value, ``%arguments`` entries ``NAME=value``,
  and every ``{{ NAME }}`` template defined in ``%arguments``.
* **Policy** for worker images (skipped with ``--syntax-only``): the base image is pinned (a tag other than
  ``latest``, or a ``@sha256:`` digest), ``%environment`` sets ``PYTHONNOUSERSITE=1`` (``$HOME`` is bind-mounted),
  ``%test`` exists, and ``%labels`` record versions.

``build`` lints, builds the lsbench wheel into ``build/image/`` (unless ``--wheel`` names one), runs
``apptainer build --fakeroot --build-arg WHEEL=... --build-arg LSBENCH_VERSION=... OUTPUT DEFINITION`` from the
checkout's root (where the ``%files`` paths are relative to), and writes ``OUTPUT.sha256``, which
``sweep submit`` records with every attempt as the image digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lsbench

__all__ = [
    "AGENTS",
    "HEADER_KEYS",
    "SECTIONS",
    "Definition",
    "DefinitionError",
    "add_image_commands",
    "check_definition",
    "parse_definition",
]

CHECKOUT_DEFINITION = Path("containers") / "lsbench.def"
PACKAGED_DEFINITION = Path(__file__).resolve().with_name("container") / "lsbench.def"
"""The shipped definition file (package data; in a checkout a link to containers/lsbench.def)."""
WHEEL_DIR = "build/image"
OUTPUT = "build/lsbench.sif"


def default_definition() -> Path:
    """``containers/lsbench.def`` of the checkout in the working directory, else the one that ships with lsbench."""
    return CHECKOUT_DEFINITION if CHECKOUT_DEFINITION.is_file() else PACKAGED_DEFINITION


def checkout_of(definition: Path) -> Path:
    """The lsbench checkout a definition file belongs to (its ``%files`` are paths relative to the checkout, and
    the wheel is built from it). Raises :class:`DefinitionError` when ``definition`` is not in one."""
    checkout = definition.resolve().parent.parent
    if not (checkout / "pyproject.toml").is_file() or not (checkout / "src" / "lsbench").is_dir():
        raise DefinitionError(
            str(definition),
            None,
            "building an image needs a checkout of lsbench (containers/lsbench.def in it): its %files are paths "
            "of the checkout, and the wheel is built from it",
        )
    return checkout


AGENTS = (
    "docker", "oras", "localimage", "scratch", "library", "shub", "oci", "oci-archive", "docker-daemon",
    "docker-archive", "yum", "dnf", "zypper", "debootstrap", "arch", "busybox",
)  # fmt: skip
NEEDS_FROM = (
    "docker",
    "oras",
    "localimage",
    "library",
    "shub",
    "oci",
    "oci-archive",
    "docker-daemon",
    "docker-archive",
)
HEADER_KEYS = (
    "bootstrap", "from", "stage", "fingerprints", "registry", "namespace", "includecmd", "mirrorurl", "osversion",
    "include", "updateurl", "setopt", "product", "user", "regcode", "productpgp", "registerurl", "modules",
    "otherurl", "confurl",
)  # fmt: skip
SECTIONS = (
    "arguments", "setup", "files", "post", "test", "environment", "startscript", "runscript", "labels", "help",
    "appinstall", "appfiles", "appenv", "apptest", "applabels", "apphelp", "apprun",
)  # fmt: skip
_SECTION_LINE = re.compile(r"%([A-Za-z]+)\b(.*)$")
_HEADER_LINE = re.compile(r"([A-Za-z][A-Za-z0-9]*)\s*:\s*(.*)$")
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ARGUMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_PINNED_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


class DefinitionError(ValueError):
    """A definition file that fails the lint; ``str(error)`` is ``<file>:<line>: <problem>`` on one line."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source, self.line, self.problem = source, line, " ".join(problem.split())
        super().__init__(f"{source}:{line}: {self.problem}" if line else f"{source}: {self.problem}")


@dataclass
class Definition:
    """A parsed definition file: header keys (lower-case) and sections (name -> (line number, text) lines)."""

    source: str
    header: dict[str, tuple[int, str]] = field(default_factory=dict)
    sections: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    section_lines: dict[str, int] = field(default_factory=dict)  # where each section starts

    def body(self, section: str) -> list[tuple[int, str]]:
        """The section's lines without blanks and comments."""
        return [(n, text.strip()) for n, text in self.sections.get(section, []) if text.strip()[:1] not in ("", "#")]

    def arguments(self) -> dict[str, str]:
        values = {}
        for _n, text in self.body("arguments"):
            match = _ARGUMENT.fullmatch(text)
            if match:
                values[match[1]] = match[2].strip().strip("\"'")
        return values


def parse_definition(text: str, source: str = "<string>") -> Definition:
    """Split ``text`` into header and sections; raise :class:`DefinitionError` for what cannot be split."""
    definition = Definition(source)
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        section = _SECTION_LINE.match(stripped) if stripped.startswith("%") and not raw[:1].isspace() else None
        if section is not None:
            name = section[1].lower()
            if name not in SECTIONS:
                raise DefinitionError(source, number, f"unknown section %{section[1]} (valid: %{', %'.join(SECTIONS)})")
            argument = section[2].strip()
            if name.startswith("app"):
                if not argument:
                    raise DefinitionError(source, number, f"%{name} needs an app name")
                name = f"{name} {argument.split()[0]}"
            elif argument and name not in ("files", "post", "setup", "test", "runscript", "startscript"):
                raise DefinitionError(source, number, f"%{name} takes no arguments, got {argument!r}")
            current = name
            definition.sections.setdefault(name, [])  # a repeated section is appended, as Apptainer does
            definition.section_lines.setdefault(name, number)
            continue
        if current is not None:
            definition.sections[current].append((number, raw))
            continue
        if not stripped or stripped.startswith("#"):
            continue
        header = _HEADER_LINE.fullmatch(stripped)
        if header is None:
            raise DefinitionError(source, number, f"expected 'Key: value' in the header, got {stripped!r}")
        key, value = header[1].lower(), header[2].strip()
        if not definition.header and key != "bootstrap":
            raise DefinitionError(source, number, f"the first header line must be 'Bootstrap: <agent>', not {key!r}")
        if key not in HEADER_KEYS:
            raise DefinitionError(source, number, f"unknown header key {header[1]!r} (valid: {', '.join(HEADER_KEYS)})")
        if key in definition.header:
            raise DefinitionError(source, number, f"header key {header[1]!r} repeats line {definition.header[key][0]}")
        if not value:
            raise DefinitionError(source, number, f"header key {header[1]!r} has no value")
        definition.header[key] = (number, value)
    if "bootstrap" not in definition.header:
        raise DefinitionError(source, None, "no 'Bootstrap:' header (it must be the first entry)")
    return definition


def _check_syntax(definition: Definition) -> None:
    source = definition.source
    line, agent = definition.header["bootstrap"]
    if agent not in AGENTS:
        raise DefinitionError(source, line, f"unknown bootstrap agent {agent!r} (valid: {', '.join(AGENTS)})")
    if agent in NEEDS_FROM and "from" not in definition.header:
        raise DefinitionError(source, line, f"'Bootstrap: {agent}' needs a 'From:' line")
    if agent == "debootstrap":
        for key in ("osversion", "mirrorurl"):
            if key not in definition.header:
                raise DefinitionError(source, line, f"'Bootstrap: debootstrap' needs {key!r}")
    defined = definition.arguments()
    for section in definition.sections:
        if section.startswith("files") or section.startswith("appfiles"):
            for number, text in definition.body(section):
                try:
                    words = shlex.split(_expand(text, defined))
                except ValueError as error:
                    raise DefinitionError(source, number, f"%files entry: {error}") from None
                if len(words) > 2:
                    raise DefinitionError(source, number, f"%files entry needs 'source [destination]', got {text!r}")
        if section == "labels" or section.startswith("applabels"):
            for number, text in definition.body(section):
                if len(text.split(None, 1)) < 2:
                    raise DefinitionError(source, number, f"%labels entry needs a name and a value, got {text!r}")
    for number, text in definition.body("arguments"):
        if _ARGUMENT.fullmatch(text) is None:
            raise DefinitionError(source, number, f"%arguments entry must be NAME=value, got {text!r}")
    lines = [(number, value) for number, value in definition.header.values()]
    lines += [(number, text) for body in definition.sections.values() for number, text in body]
    for number, text in sorted(lines):
        for name in _TEMPLATE.findall(text):
            if name not in defined:
                raise DefinitionError(source, number, f"template {{{{ {name} }}}} has no default in %arguments")


def _expand(text: str, arguments: dict[str, str]) -> str:
    return _TEMPLATE.sub(lambda match: arguments.get(match[1], match[0]), text)


def _check_policy(definition: Definition) -> None:
    source = definition.source
    line, agent = definition.header["bootstrap"]
    if agent in ("docker", "oras", "library") and "from" in definition.header:
        line, reference = definition.header["from"]
        reference = _expand(reference, definition.arguments())
        name = reference.split("@")[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        if not _PINNED_DIGEST.search(reference) and (not tag or tag == "latest"):
            raise DefinitionError(source, line, f"the base image {reference!r} is not pinned (give a tag or @sha256:)")
    environment = " ".join(text for _n, text in definition.body("environment"))
    if not re.search(r"\bPYTHONNOUSERSITE=1\b", environment):
        where = definition.section_lines.get("environment", line)
        raise DefinitionError(source, where, "%environment must export PYTHONNOUSERSITE=1 ($HOME is bind-mounted)")
    if not definition.body("test"):
        raise DefinitionError(source, None, "no %test section: the image must prove it imports torch and lsbench")
    labels = [text.split(None, 1)[0].lower() for _n, text in definition.body("labels")]
    if not any("version" in label for label in labels):
        where = definition.section_lines.get("labels")
        raise DefinitionError(source, where, "%labels must record versions (a label whose name contains 'version')")


def check_definition(path: str | Path, *, syntax_only: bool = False) -> Definition:
    """Parse and lint a definition file; raise :class:`DefinitionError` with the first problem."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise DefinitionError(source, None, f"cannot read it: {getattr(error, 'strerror', None) or error}") from None
    definition = parse_definition(text, source)
    _check_syntax(definition)
    if not syntax_only:
        _check_policy(definition)
    return definition


# -- build ----------------------------------------------------------------------------------------------------


def build_wheel(checkout: Path, out_dir: Path) -> Path:
    """Build the lsbench wheel of ``checkout`` into ``out_dir``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("lsbench-*.whl"):
        old.unlink()
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir), str(checkout)]
    subprocess.run(command, check=True)
    wheels = sorted(out_dir.glob("lsbench-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one lsbench wheel in {out_dir}, found {len(wheels)}")
    return wheels[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_command(runtime: str, definition: Path, output: Path, wheel_name: str) -> list[str]:
    """The ``apptainer build`` command line (run from the checkout's root)."""
    return [
        runtime, "build", "--fakeroot",
        "--build-arg", f"WHEEL={wheel_name}", "--build-arg", f"LSBENCH_VERSION={lsbench.__version__}",
        str(output), str(definition),
    ]  # fmt: skip


def cmd_image_check(args: argparse.Namespace) -> int:
    path = args.definition or default_definition()
    definition = check_definition(path, syntax_only=args.syntax_only)
    agent = definition.header["bootstrap"][1]
    base = definition.header.get("from", (0, ""))[1]
    if args.json:
        report = {
            "definition": str(path),
            "ok": True,
            "bootstrap": agent,
            "from": base or None,
            "sections": list(definition.sections),
            "policy_checked": not args.syntax_only,
        }
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    sections = ", ".join(f"%{name}" for name in definition.sections)
    print(f"{path}: ok (Bootstrap {agent}{' ' + base if base else ''}; {sections})")
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    definition = (args.definition or default_definition()).resolve()
    check_definition(definition)
    checkout = checkout_of(definition)
    output = Path(args.output).resolve() if args.output else checkout / OUTPUT
    runtime = args.apptainer
    if not args.dry_run and shutil.which(runtime) is None:
        print(f"sweep: error: {runtime} is not on PATH (build where Apptainer >= 1.2 is installed)", file=sys.stderr)
        return 1
    wheel_dir = checkout / WHEEL_DIR
    if args.wheel:
        wheel = Path(args.wheel).resolve()
        if not wheel.is_file() or not wheel.name.endswith(".whl"):
            print(f"sweep: error: {args.wheel} is not a wheel file", file=sys.stderr)
            return 2
    else:
        wheel = wheel_dir / f"lsbench-{lsbench.__version__}-py3-none-any.whl"
    command = build_command(runtime, definition, output, wheel.name)
    if args.dry_run:
        print(f"would build the wheel into {wheel_dir}" if not args.wheel else f"would use {wheel}")
        print(f"cd {shlex.quote(str(checkout))} && {shlex.join(command)}")
        return 0
    if args.wheel:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        if wheel.parent != wheel_dir:
            shutil.copy2(wheel, wheel_dir / wheel.name)
    else:
        wheel = build_wheel(checkout, wheel_dir)
        command = build_command(runtime, definition, output, wheel.name)
    output.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {shlex.join(command)}", flush=True)
    done = subprocess.run(command, cwd=checkout)
    if done.returncode != 0:
        print(f"sweep: error: {runtime} build exited with {done.returncode}", file=sys.stderr)
        return 1
    digest = sha256_file(output)
    Path(f"{output}.sha256").write_text(f"{digest}  {output.name}\n")
    print(f"built {output} (sha256:{digest})")
    return 0


def _check_and_report(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a failed lint as one line with exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except DefinitionError as error:
            print(f"sweep: error: {error}", file=sys.stderr)
            return 2

    return run


def add_image_commands(subparsers: argparse._SubParsersAction) -> None:
    """``sweep image check`` and ``sweep image build``."""
    image = subparsers.add_parser("image", help="check or build the worker's container image")
    commands = image.add_subparsers(dest="image_command", metavar="COMMAND")

    def usage(_args: argparse.Namespace) -> int:
        image.print_help(sys.stderr)
        return 2

    image.set_defaults(handler=usage)

    check = commands.add_parser("check", help="lint an Apptainer definition file (exit 2 with the first problem)")
    shown = "default: ./containers/lsbench.def, else the shipped one"
    check.add_argument("definition", nargs="?", type=Path, default=None, help=shown)
    check.add_argument("--syntax-only", action="store_true", help="skip the worker-image policy rules")
    check.add_argument("--json", action="store_true", help="print the result as JSON (a failed lint: exit 2, stderr)")
    check.set_defaults(handler=_check_and_report(cmd_image_check))

    build = commands.add_parser("build", help="build the worker image with apptainer build --fakeroot")
    build.add_argument("definition", nargs="?", type=Path, default=None, help=f"{shown} (in a checkout)")
    build.add_argument("--output", default=None, help=f"the image file (default: {OUTPUT} in the checkout)")
    build.add_argument("--wheel", default=None, help="use this lsbench wheel instead of building one")
    build.add_argument("--apptainer", default="apptainer", choices=("apptainer", "singularity"))
    build.add_argument("--dry-run", action="store_true", help="print the commands; build nothing")
    build.set_defaults(handler=_check_and_report(cmd_image_build))


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - `sweep image ...` is the entry
    parser = argparse.ArgumentParser(prog="sweep")
    add_image_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)
