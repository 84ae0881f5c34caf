"""What ``litevae push`` is told: :class:`CardOptions`, what the model card says, and :class:`PushSettings`, how the
upload goes; each field declares its flag. No torch or huggingface_hub here, so ``litevae push --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import setting

__all__ = ["DEFAULT_COMMIT_MESSAGE", "CardOptions", "PushSettings"]

DEFAULT_COMMIT_MESSAGE = "Upload LiteVAE model with diffusers-litevae"


@dataclass(frozen=True)
class CardOptions:
    """What a model card says that the model folder does not record: where the model loads from, its name and
    licence, and how the card presents its teacher. ``bundled_name`` (no flag), for a model bundled with
    diffusers-litevae, makes the card load ``pretrained_path(bundled_name)``; a card needs it, ``repo_id`` or both.
    """

    repo_id: str | None = setting(
        None,
        "target Hub repo 'owner/name' (also with --dry_run: the card's snippets load the model from it)",
        required=True,
    )
    name: str | None = setting(None, "the model's name in the card (default: the name in --repo_id)")
    teacher_description: str | None = setting(
        None, "one sentence on the teacher VAE (what it is, author, licence), said once in the card's introduction"
    )
    license: str = setting("apache-2.0", "Hub license id for the card metadata")
    base_model: str | None = setting(None, "Hub id of the teacher VAE (default: from distillation.json)")
    pipeline_id: str | None = setting(None, "pipeline repo to show in the card's usage snippet")
    bundled_name: str | None = None

    @property
    def title(self) -> str | None:
        """The model's name in the card: ``name``, else the name part of ``repo_id``, else ``bundled_name``."""
        return self.name or (self.repo_id.split("/")[-1] if self.repo_id else self.bundled_name)


@dataclass(frozen=True)
class PushSettings:
    """How :func:`~diffusers_litevae.hub.push_to_hub` uploads: the flags of ``litevae push`` that are neither the
    model, its metrics nor the card's."""

    private: bool = setting(False, "create the repo private", action="store_true")
    token: str | None = setting(None, "Hugging Face token (default: the one stored by `hf auth login`)")
    commit_message: str | None = setting(None, f'commit message of the upload (default: "{DEFAULT_COMMIT_MESSAGE}")')
    output_dir: str | None = setting(
        None, "write the upload folder here (must be new or empty; default: a temporary folder)"
    )
    dry_run: bool = setting(
        False,
        "only write the folder that would be uploaded and list it",
        flags=("--dry_run", "--dry-run"),
        action="store_true",
    )
