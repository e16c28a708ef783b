"""Installing, updating and removing user extensions with git, and their Python requirements with pip.

Installing an extension runs its author's code on this machine, so it is refused whenever the studio is exposed
(``--listen`` or ``--share``) unless the user passed ``--enable-insecure-extension-access`` — A1111's rule. A clone
goes to a hidden staging folder first and is renamed into place only once its manifest reads, so a failed install
leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from modules.extensions.manager import ExtensionError, LoadedExtension, Manifest

GIT_TIMEOUT = 300
PIP_TIMEOUT = 900
EXPOSED_MESSAGE = (
    "Installing, updating and removing extensions is off because this studio is reachable from other machines "
    "(--listen or --share): an extension runs code on this computer. Restart with "
    "--enable-insecure-extension-access if you trust everyone who can reach it."
)
_URL = re.compile(r"^(https?|git|ssh|file)://\S+$|^[\w.-]+@[\w.-]+:\S+$")


@dataclass(frozen=True)
class InstallReport:
    """What an install or update did, for the Extensions tab and the API."""

    name: str
    folder: Path
    requirements: tuple[str, ...] = ()
    pip_output: str = ""
    message: str = ""


def check_allowed(exposed: bool, insecure_access: bool) -> None:
    """Raise with the reason when installing is not allowed in this studio."""
    if exposed and not insecure_access:
        raise ExtensionError(EXPOSED_MESSAGE)


def normalise_source(source: str) -> str:
    """A git URL as given, or a local folder turned into a ``file://`` URL; anything else is refused."""
    source = source.strip()
    if not source:
        raise ExtensionError("give a git URL or a local folder to install from")
    if source.startswith("-"):
        raise ExtensionError("a URL may not start with '-'")
    if _URL.match(source):
        return source
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve().as_uri()
    raise ExtensionError(f"{source!r} is neither a git URL (https://, ssh://, git://, file://) nor a local folder")


def install(source: str, user_dir: Path, *, branch: str | None = None,
            install_requirements: bool = True) -> InstallReport:
    """Clone ``source`` into ``user_dir/<its manifest name>`` and install what it requires."""
    url = normalise_source(source)
    user_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=user_dir))
    try:
        command = ["git", "clone", "--depth", "1", *(["--branch", branch] if branch else []), "--", url,
                   str(staging / "repo")]
        _git(command, cwd=user_dir)
        manifest = Manifest.read(staging / "repo")
        target = user_dir / manifest.name
        if target.exists():
            raise ExtensionError(f"an extension called {manifest.name!r} is already installed ({target})")
        output = _pip_install(manifest.requires) if install_requirements else ""
        os.replace(staging / "repo", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return InstallReport(manifest.name, target, manifest.requires, output,
                         f"installed {manifest.name} {manifest.version}")


def update(item: LoadedExtension, *, install_requirements: bool = True) -> InstallReport:
    """Fast-forward a git-installed extension to its remote's latest commit and refresh its requirements."""
    if item.source != "user":
        raise ExtensionError(f"{item.name} is built in; it updates with Sfumato itself")
    if not (item.folder / ".git").exists():
        raise ExtensionError(f"{item.name} was not installed with git, so it cannot be updated here")
    before = _git(["git", "rev-parse", "HEAD"], cwd=item.folder).strip()
    _git(["git", "pull", "--ff-only"], cwd=item.folder)
    after = _git(["git", "rev-parse", "HEAD"], cwd=item.folder).strip()
    manifest = Manifest.read(item.folder)
    output = _pip_install(manifest.requires) if install_requirements else ""
    message = f"{manifest.name} is up to date" if before == after else f"updated {manifest.name} to {after[:8]}"
    return InstallReport(manifest.name, item.folder, manifest.requires, output, message)


def remove(item: LoadedExtension) -> None:
    """Delete a user extension's folder (built-in ones can only be disabled)."""
    if item.source != "user":
        raise ExtensionError(f"{item.name} is built in; disable it instead")
    try:
        shutil.rmtree(item.folder)
    except OSError as error:
        raise ExtensionError(f"could not remove {item.folder}: {error}") from None


def _git(command: list[str], cwd: Path) -> str:
    if shutil.which("git") is None:
        raise ExtensionError("git is not installed; install it to add extensions from a URL")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "echo"}
    try:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise ExtensionError(f"git took longer than {GIT_TIMEOUT} s: {' '.join(command[:2])}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ExtensionError(f"{' '.join(command[:2])} failed: {detail[-1] if detail else done.returncode}")
    return done.stdout


def _pip_install(requirements: tuple[str, ...]) -> str:
    """Install an extension's requirements into the studio's own environment; its output is the report."""
    if not requirements:
        return ""
    for requirement in requirements:
        if requirement.strip().startswith("-"):
            raise ExtensionError(f"requirement {requirement!r} looks like a pip option; only package names allowed")
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *requirements]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ExtensionError(f"installing {', '.join(requirements)} took longer than {PIP_TIMEOUT} s") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise ExtensionError(f"could not install {', '.join(requirements)}:\n{output[-2000:]}")
    return output
