"""What a training job gives back: the model file it wrote, its loss curve and its samples, as artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from modules.jobs.artifacts import Artifact


@dataclass(eq=False)
class TrainResult:
    """``output`` is the trained file in ``models/`` (None when the run stopped before its last step: paused,
    cancelled or cut by a shutdown; its checkpoint is kept and the same request resumes it)."""

    output: Path | None
    method: str
    step: int
    steps: int
    losses: list[float] = field(default_factory=list)
    loss_curve: Path | None = None
    samples: list[Path] = field(default_factory=list)
    run_folder: Path | None = None
    stopped: bool = False
    resumed_from: int = 0  # the step of the checkpoint this job continued from

    @property
    def interrupted(self) -> bool:
        return self.stopped

    @property
    def counted_images(self) -> int:
        return 0

    @property
    def artifacts(self) -> list[Artifact]:
        parameters: dict[str, Any] = {"method": self.method, "step": self.step, "steps": self.steps,
                                      "loss": self.losses[-1] if self.losses else None}
        found: list[Artifact] = []
        if self.output is not None:
            found.append(Artifact("file", path=self.output, parameters=parameters))
        if self.loss_curve is not None and self.loss_curve.is_file():
            found.append(Artifact("image", path=self.loss_curve, image=_open(self.loss_curve),
                                  parameters={**parameters, "what": "loss curve"}))
        for path in self.samples:
            if path.is_file():
                found.append(Artifact("image", path=path, image=_open(path), parameters={**parameters,
                                                                                         "what": "sample"}))
        return found


def _open(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except OSError:
        return None


def result_to_dict(result: TrainResult, _folder: Path) -> dict[str, Any]:
    def text(path: Path | None) -> str | None:
        return str(path) if path is not None else None

    return {"output": text(result.output), "method": result.method, "step": result.step, "steps": result.steps,
            "losses": result.losses, "loss_curve": text(result.loss_curve),
            "samples": [str(path) for path in result.samples], "run_folder": text(result.run_folder),
            "stopped": result.stopped, "resumed_from": result.resumed_from}


def result_from_dict(data: dict[str, Any], _folder: Path) -> tuple[TrainResult, list[str]]:
    def path(value: Any) -> Path | None:
        return Path(value) if value else None

    result = TrainResult(output=path(data.get("output")), method=str(data.get("method", "")),
                         step=int(data.get("step", 0)), steps=int(data.get("steps", 0)),
                         losses=[float(value) for value in data.get("losses") or []],
                         loss_curve=path(data.get("loss_curve")),
                         samples=[Path(value) for value in data.get("samples") or []],
                         run_folder=path(data.get("run_folder")), stopped=bool(data.get("stopped")),
                         resumed_from=int(data.get("resumed_from", 0)))
    missing = [str(item) for item in [result.output, result.loss_curve, *result.samples]
               if item is not None and not item.exists()]
    return result, [f"{item}: missing" for item in missing]
