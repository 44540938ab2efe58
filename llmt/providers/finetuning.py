"""Fine-tuning jobs: upload training files and create, find and follow jobs, through the openai SDK (OpenAI or
any compatible server) or offline (the ``fake`` provider, whose jobs succeed at once).

Like batches, a job is created with metadata that names llmt's submission (`llmt_submission`), and a create
that failed in doubt (a lost response, a 5xx) is followed by a look for the job before creating it again, so
that a crash or a retry never starts a second paid job.
"""

from __future__ import annotations

import json
import shutil
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmt.errors import ProviderError
from llmt.providers.openai_batch import create_once
from llmt.tokens import RequestCounter

if TYPE_CHECKING:
    import openai

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class JobInfo:
    """What the provider knows of one fine-tuning job."""

    job_id: str
    status: str  # validating_files, queued, running, succeeded, failed, cancelled
    model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class FineTuner(ABC):
    @abstractmethod
    def upload(self, path: Path) -> str:
        """Upload a training or validation file (purpose fine-tune); its file id."""

    @abstractmethod
    def find_job(self, submission: str) -> JobInfo | None:
        """The job created for llmt's ``submission`` (by its metadata), if any."""

    @abstractmethod
    def create_job(self, *, model: str, training_file: str, validation_file: str | None, suffix: str | None,
                   epochs: int | None, submission: str) -> JobInfo:
        """Create the job (``epochs`` None: the provider's choice)."""

    @abstractmethod
    def retrieve(self, job_id: str) -> JobInfo:
        """The job as it is now."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class OpenAIFineTuner(FineTuner):
    def __init__(self, client: openai.OpenAI, *, list_limit: int = 1000, backoff: float = 1.0) -> None:
        self.client = client
        self.list_limit = list_limit
        self.backoff = backoff

    def upload(self, path: Path) -> str:
        import openai

        try:
            with path.open("rb") as handle:
                return str(self.client.files.create(file=(path.name, handle), purpose="fine-tune").id)
        except openai.APIError as exc:
            raise _error(f"upload {path.name}", exc) from None

    def find_job(self, submission: str) -> JobInfo | None:
        import openai

        seen = 0
        try:
            page = self.client.fine_tuning.jobs.list(limit=100, metadata={"llmt_submission": submission})
            while True:
                for job in page.data:
                    seen += 1
                    if (job.metadata or {}).get("llmt_submission") == submission:
                        return _info(job)
                if not page.has_next_page() or seen >= self.list_limit:
                    return None
                page = page.get_next_page()
        except openai.APIError as exc:
            raise _error("list fine-tuning jobs", exc) from None

    def create_job(self, *, model: str, training_file: str, validation_file: str | None, suffix: str | None,
                   epochs: int | None, submission: str) -> JobInfo:
        params: dict[str, Any] = {"model": model, "training_file": training_file,
                                  "metadata": {"llmt_submission": submission}}
        if validation_file:
            params["validation_file"] = validation_file
        if suffix:
            params["suffix"] = suffix
        if epochs is not None:
            params["method"] = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs}}}
        return create_once("create the fine-tuning job", lambda: _info(self.client.with_options(
            max_retries=0).fine_tuning.jobs.create(**params)), lambda: self.find_job(submission), self.backoff, _error)

    def retrieve(self, job_id: str) -> JobInfo:
        import openai

        try:
            return _info(self.client.fine_tuning.jobs.retrieve(job_id))
        except openai.APIError as exc:
            raise _error(f"read fine-tuning job {job_id}", exc) from None

    def close(self) -> None:
        self.client.close()


class FakeFineTuner(FineTuner):
    """Offline jobs in a local directory playing the remote: a job succeeds at once, trained on its training
    file's tokens times its epochs (3 unless given), and names a made-up `ft:` model."""

    def __init__(self, root: Path) -> None:
        self.root = root / "fine_tuning"

    def upload(self, path: Path) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.root / file_id)
        return file_id

    def _jobs(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.root.glob("ftjob-*.json"))]

    def find_job(self, submission: str) -> JobInfo | None:
        found = [j for j in self._jobs() if j["metadata"].get("llmt_submission") == submission]
        return _fake_info(found[-1]) if found else None

    def create_job(self, *, model: str, training_file: str, validation_file: str | None, suffix: str | None,
                   epochs: int | None, submission: str) -> JobInfo:
        training = self.root / training_file
        if not training.is_file():
            raise ProviderError(f"no such file `{training_file}`", where="fake provider")
        counter = RequestCounter(model, None)
        tokens = sum(counter.count(json.loads(raw)["messages"])
                     for raw in training.read_text(encoding="utf-8").splitlines() if raw.strip())
        job_id = f"ftjob-{uuid.uuid4().hex[:24]}"
        job = {"id": job_id, "status": "succeeded", "model": model, "metadata": {"llmt_submission": submission},
               "fine_tuned_model": f"ft:{model}:llmt-fake:{suffix or ''}:{job_id[-8:]}",
               "trained_tokens": tokens * (epochs or 3), "error": None}
        (self.root / f"{job_id}.json").write_text(json.dumps(job), encoding="utf-8")
        return _fake_info(job)

    def retrieve(self, job_id: str) -> JobInfo:
        path = self.root / f"{job_id}.json"
        if not path.is_file():
            raise ProviderError(f"no such fine-tuning job `{job_id}`", where="fake provider")
        return _fake_info(json.loads(path.read_text(encoding="utf-8")))


def _fake_info(job: dict[str, Any]) -> JobInfo:
    return JobInfo(job["id"], job["status"], job["model"], job["fine_tuned_model"], job["trained_tokens"],
                   job["error"], dict(job["metadata"]))


def _info(job: Any) -> JobInfo:
    error = job.error
    detail = None
    if error is not None and (error.code or error.message):
        detail = f"{error.code}: {error.message}" if error.code else str(error.message)
    return JobInfo(job.id, job.status, job.model, job.fine_tuned_model, job.trained_tokens, detail,
                   dict(job.metadata or {}))


def _error(what: str, exc: Exception) -> ProviderError:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    return ProviderError(f"could not {what}: {message}" + (f" (HTTP {status})" if status else ""),
                         where="openai provider",
                         hint="Run `llmt finetune submit` again: it goes on from what it recorded (no job twice).")
