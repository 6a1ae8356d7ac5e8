"""Office documents (slides, word processing, spreadsheets) -> PDF with LibreOffice.

Each conversion runs ``soffice --headless --convert-to pdf`` in its own process
group with a timeout (the whole group is killed on expiry) and with a user profile
(``-env:UserInstallation``) used by one worker at a time, so parallel conversions
never share a profile. Profiles are reused by the next conversion of that worker
(faster start); a profile whose conversion was killed is thrown away.
The resulting PDF is rendered by :mod:`renderers.pdf` (one page per slide).
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree as ET

from renderers.errors import BackendUnavailableError, ConversionError, RenderTimeoutError

log = logging.getLogger(__name__)


def find_soffice(explicit: str | None = None) -> str:
    """Path of the LibreOffice executable: ``explicit``, ``$DSE_SOFFICE``, or ``soffice``/``libreoffice`` on PATH."""
    for candidate in (explicit, os.environ.get("DSE_SOFFICE")):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
            raise BackendUnavailableError(f"LibreOffice executable not found: {candidate}")
    for name in ("soffice", "libreoffice"):
        found = shutil.which(name)
        if found:
            return found
    raise BackendUnavailableError(
        "LibreOffice not found: install it (soffice on PATH) or set DSE_SOFFICE / settings.soffice"
    )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not get ignored
        log.warning("soffice process %d did not exit after SIGKILL", proc.pid)


def _stderr_summary(text: str) -> str:
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and "javaldx" not in ln and not ln.startswith("convert ")
    ]
    return "; ".join(lines[-3:])


#: LibreOffice module library of each application, and the Debian package that installs it.
_COMPONENTS = {
    "spreadsheet": ("libsclo.so", "Calc", "libreoffice-calc"),
    "presentation": ("libsdlo.so", "Impress", "libreoffice-impress"),
    "text": ("libswlo.so", "Writer", "libreoffice-writer"),
}
_COMPONENT_OF_EXT = {
    **dict.fromkeys((".xlsx", ".xls", ".ods", ".ots"), "spreadsheet"),
    **dict.fromkeys((".pptx", ".ppt", ".odp", ".otp", ".key"), "presentation"),
    **dict.fromkeys((".docx", ".doc", ".odt", ".ott", ".rtf"), "text"),
}


def missing_component_hint(soffice: str, path: Path) -> str:
    """``" (LibreOffice Calc is not installed: ...)"`` when the application that opens ``path``'s
    type is missing from the LibreOffice installation (LibreOffice then only says "source file
    could not be loaded"); ``""`` when it is there or cannot be told."""
    component = _COMPONENT_OF_EXT.get(path.suffix.lower())
    if component is None:
        return ""
    library, name, package = _COMPONENTS[component]
    program = Path(soffice).resolve().parent
    if not (program / "libmergedlo.so").exists() or (program / library).exists():
        return ""  # not a recognisable installation, or the component is there
    return f" (LibreOffice {name} is not installed: install {package} or equivalent)"


class OfficeConverter:
    """Converts office files to PDF with up to ``workers`` LibreOffice processes at once.

    ``submit(path)`` returns a future of the converted PDF's path; the PDF lives in
    its own temporary directory, removed by :meth:`discard` (or :meth:`close`).
    """

    def __init__(self, workers: int, timeout: float, soffice: str | None = None, workdir: Path | None = None) -> None:
        self.workers = workers
        self.timeout = timeout
        self._soffice_setting = soffice
        self._soffice: str | None = None
        self._own_workdir = workdir is None
        self._workdir = Path(tempfile.mkdtemp(prefix="dse-office-")) if workdir is None else workdir
        self._profiles: queue.Queue[Path] = queue.Queue()
        self._running: set[subprocess.Popen] = set()
        self._closing = False
        self._n_profiles = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dse-soffice")
        for _ in range(workers):
            self._profiles.put(self._new_profile())

    def _new_profile(self) -> Path:
        with self._lock:
            self._n_profiles += 1
            p = self._workdir / f"profile-{self._n_profiles}"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _executable(self) -> str:
        with self._lock:
            if self._soffice is None:
                self._soffice = find_soffice(self._soffice_setting)
            return self._soffice

    def submit(self, path: Path) -> Future[Path]:
        """Queue a conversion of ``path``; the future raises :class:`RenderError` subclasses."""
        return self._executor.submit(self.convert, path)

    def convert(self, path: Path) -> Path:
        """Convert ``path`` to PDF (blocking). Returns the PDF path."""
        exe = self._executable()
        outdir = Path(tempfile.mkdtemp(prefix="conv-", dir=self._workdir))
        profile = self._profiles.get()
        keep_profile = True
        try:
            cmd = [
                exe,
                f"-env:UserInstallation={profile.resolve().as_uri()}",
                "--headless",
                "--invisible",
                "--norestore",
                "--nolockcheck",
                "--nodefault",
                "--nologo",
                "--convert-to",
                "pdf",
                "--outdir",
                str(outdir),
                str(path.resolve()),
            ]
            log.debug("converting %s with LibreOffice (profile %s)", path, profile.name)
            started = time.monotonic()
            with self._lock:
                if self._closing:
                    raise ConversionError("converter is shutting down")
                try:
                    proc = subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        start_new_session=True,
                    )
                except OSError as exc:
                    raise BackendUnavailableError(f"cannot start LibreOffice ({exe}): {exc}") from None
                self._running.add(proc)
            try:
                out, err = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                keep_profile = False
                raise RenderTimeoutError(
                    f"LibreOffice conversion timed out after {self.timeout:g}s (process group killed)"
                ) from None
            finally:
                with self._lock:
                    self._running.discard(proc)
                if proc.poll() is None:  # e.g. KeyboardInterrupt while waiting
                    _kill_group(proc)
                    keep_profile = False
            if self._closing:
                keep_profile = False
                raise ConversionError("converter was closed during the conversion")
            log.debug(
                "LibreOffice converted %s in %.1fs (exit %s)", path.name, time.monotonic() - started, proc.returncode
            )
            pdf = outdir / (path.stem + ".pdf")
            message = _stderr_summary(err.decode("utf-8", "replace") + "\n" + out.decode("utf-8", "replace"))
            if proc.returncode != 0:
                raise ConversionError(f"LibreOffice failed (exit {proc.returncode}): {message or 'no message'}")
            if not pdf.exists() or pdf.stat().st_size == 0:
                hint = missing_component_hint(exe, path)
                raise ConversionError(f"LibreOffice could not convert the file: {message or 'no PDF produced'}{hint}")
            return pdf
        except BaseException:
            shutil.rmtree(outdir, ignore_errors=True)
            raise
        finally:
            if not keep_profile:
                shutil.rmtree(profile, ignore_errors=True)
                profile = self._new_profile()
            self._profiles.put(profile)

    def discard(self, pdf: Path) -> None:
        """Remove a converted PDF and its temporary directory."""
        if pdf.parent.parent == self._workdir:
            shutil.rmtree(pdf.parent, ignore_errors=True)

    def close(self) -> None:
        """Cancel queued conversions, kill running ones (process groups), remove temp files."""
        with self._lock:
            self._closing = True
            running = list(self._running)
        for proc in running:
            _kill_group(proc)
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._own_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)


# ------------------------------------------------------------------ slide titles

_P = "http://schemas.openxmlformats.org/presentationml/2006/main"
_A = "http://schemas.openxmlformats.org/drawingml/2006/main"
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_R = "http://schemas.openxmlformats.org/package/2006/relationships"
_DRAW = "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
_PRES = "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0"
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_ODP_MIME = "application/vnd.oasis.opendocument.presentation"


def _pptx_titles(zf: zipfile.ZipFile) -> list[str | None]:
    pres = ET.fromstring(zf.read("ppt/presentation.xml"))
    rels = ET.fromstring(zf.read("ppt/_rels/presentation.xml.rels"))
    targets = {r.get("Id"): r.get("Target") for r in rels.iter(f"{{{_PKG_R}}}Relationship")}
    titles: list[str | None] = []
    lst = pres.find(f"{{{_P}}}sldIdLst")
    for sld in [] if lst is None else list(lst):
        target = targets.get(sld.get(f"{{{_R}}}id"))
        if not target:
            continue
        name = posixpath.normpath(target.lstrip("/") if target.startswith("/") else posixpath.join("ppt", target))
        slide = ET.fromstring(zf.read(name))
        if slide.get("show") in ("0", "false"):
            continue  # hidden slides are not exported to PDF
        title = None
        for sp in slide.iter(f"{{{_P}}}sp"):
            ph = sp.find(f"{{{_P}}}nvSpPr/{{{_P}}}nvPr/{{{_P}}}ph")
            if ph is not None and ph.get("type") in ("title", "ctrTitle"):
                text = " ".join(t.text for t in sp.iter(f"{{{_A}}}t") if t.text).strip()
                title = " ".join(text.split()) or None
                break
        titles.append(title)
    return titles


def _odp_titles(zf: zipfile.ZipFile) -> list[str | None]:
    root = ET.fromstring(zf.read("content.xml"))
    titles: list[str | None] = []
    for page in root.iter(f"{{{_DRAW}}}page"):
        title = None
        for frame in page.iter(f"{{{_DRAW}}}frame"):
            if frame.get(f"{{{_PRES}}}class") == "title":
                text = " ".join("".join(frame.itertext()).split())
                title = text or None
                break
        titles.append(title)
    return titles


def _is_odf_presentation(zf: zipfile.ZipFile, names: set[str], ext: str) -> bool:
    if "content.xml" not in names:
        return False
    if "mimetype" in names:  # presentation or presentation-template
        return zf.read("mimetype").decode("ascii", "replace").strip().startswith(_ODP_MIME)
    return ext in (".odp", ".otp")


def slide_titles(path: Path) -> list[str | None] | None:
    """Per-slide titles of a presentation package (Office Open XML or OpenDocument, templates
    included), in PDF page order; ``None`` for other files or when unavailable.

    The flavour is read from the package, not the extension (LibreOffice converts by content).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "ppt/presentation.xml" in names:
                return _pptx_titles(zf)
            if _is_odf_presentation(zf, names, path.suffix.lower()):
                return _odp_titles(zf)
    except (zipfile.BadZipFile, KeyError, ET.ParseError, OSError) as exc:
        log.debug("no slide titles for %s: %s", path, exc)
    return None
