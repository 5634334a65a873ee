"""The transformers-style saving / loading API of :class:`~mowe.model.MoWEAudioLLM`, as a mixin.

Kept apart from the model's forward logic; every method delegates to :mod:`mowe.hf.saving` or
:mod:`mowe.hf.adapter`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mowe.data.processor import MoWEProcessor
from mowe.data.tokenizer import check_placeholder_agrees
from mowe.hf import saving
from mowe.hf.adapter import export_llm, merge_lora
from mowe.hf.config import MoWEPretrainedConfig
from mowe.hf.model_card import CardInfo

__all__ = ["MoWEHubMixin"]


class MoWEHubMixin:
    """``save_pretrained`` / ``from_pretrained`` (folders and hub ids) / ``push_to_hub``, LoRA merge and LLM
    export."""

    config_class = MoWEPretrainedConfig  # what transformers' Auto classes pair the model with

    @property
    def card_info(self) -> CardInfo:
        """The model card's training data and evaluation results (:mod:`mowe.hf.model_card`); written by
        :meth:`save_pretrained`, read back by :meth:`from_pretrained`."""
        info = self.__dict__.get("_card_info")
        if info is None:
            info = self.__dict__["_card_info"] = CardInfo()
        return info

    @card_info.setter
    def card_info(self, info: CardInfo) -> None:
        self.__dict__["_card_info"] = info

    def _keys_to_save(self, save_frozen: bool) -> list[str]:
        return saving.keys_to_save(self, save_frozen=save_frozen)

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        save_frozen: bool = False,
        processor: Any = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **push_kwargs: Any,
    ) -> None:
        """Write the model folder atomically (:func:`mowe.hf.saving.save_model`).

        ``config.json`` (``model_type: "mowe"``), ``model.safetensors``, ``llm_adapter/`` (the LoRA as a PEFT
        adapter), ``generation_config.json``, the model card ``README.md`` (architecture, training data,
        ``model-index`` results from :attr:`card_info`) and, with ``processor``, its tokenizer and
        ``processor_config.json``.
        Trainable weights and parts with random initial weights (no source) are saved; frozen towers loaded
        from a hub id or folder are referenced by that source, not copied, unless ``save_frozen=True``.

        ``push_to_hub=True`` then uploads the folder to ``repo_id`` (default: the folder's name);
        ``push_kwargs`` as :meth:`push_to_hub`.
        """
        saving.save_model(
            self,
            directory,
            save_frozen=save_frozen,
            processor=processor,
            card_name=repo_id if push_to_hub else None,
        )
        if push_to_hub:
            repo = repo_id or os.path.basename(os.path.abspath(os.fspath(directory)))
            saving.push_model(self, repo, folder=directory, **push_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        processor: Any = None,
        save_frozen: bool = False,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Save to a temporary folder and upload it to the hub repository ``repo_id`` (created if missing).

        Returns:
            huggingface_hub's ``CommitInfo``.
        """
        return saving.push_model(
            self,
            repo_id,
            processor=processor,
            save_frozen=save_frozen,
            commit_message=commit_message,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        encoders: Mapping[str, nn.Module] | None = None,
        map_location: str | torch.device = "cpu",
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        allow_components: Sequence[str] | None = None,
        **kwargs: Any,
    ):
        """Load a saved model from a folder or a hub id (``"org/name"``, through huggingface_hub's cache).

        Rebuilds from ``config.json`` (frozen towers from their sources), loads the weights, the LoRA adapter
        and the generation config, and applies the saved inference LoRA scale
        (``config.inference.lora_scale``).

        Args:
            name_or_path: a folder written by :meth:`save_pretrained`, or a hub repository id.
            encoders: modules for ``family="custom"`` encoders (by name).
            map_location: where the saved tensors are read to.
            revision / cache_dir / local_files_only: as in transformers (``HF_HUB_OFFLINE=1`` also keeps it
            local).
            allow_components: packages (``["my_pkg"]``) whose components the config may name; a component
                outside mowe and these raises a :class:`~mowe.errors.ConfigError` before its module is
                imported.
            kwargs: ``token``, ``force_download``, ``subfolder``, ``config``; what ``AutoModel`` adds is
            accepted.
        """
        return saving.load_model(
            cls,
            name_or_path,
            encoders=encoders,
            map_location=map_location,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_components=allow_components,
            **kwargs,
        )

    def load_weights(self, path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> None:
        """Load what :meth:`save_pretrained` wrote into this model (built with the same config): ``path`` is
        the folder or its ``model.safetensors``; the LoRA comes from the ``llm_adapter/`` beside it. Every key
           must fit
        this model (:func:`mowe.hf.saving.load_saved_weights`)."""
        saving.load_saved_weights(self, path, map_location=map_location)

    def merge_lora(self):
        """Merge the LLM's LoRA into its weights in place and return the model
        (:func:`mowe.hf.adapter.merge_lora`)."""
        return merge_lora(self)

    def export_llm(self, directory: str | os.PathLike, *, tokenizer: Any = None, merged: bool = True) -> str:
        """Write the LLM as a plain transformers folder (merged, or the base without LoRA with
        ``merged=False``) that ``AutoModelForCausalLM.from_pretrained`` loads without mowe
           (:func:`mowe.hf.adapter.export_llm`)."""
        return export_llm(self, directory, tokenizer=tokenizer, merged=merged)

    def processor_for(self, tokenizer: Any, **kwargs: Any):
        """A :class:`~mowe.data.processor.MoWEProcessor` with the saved ``config.inference.prompt_template``
        (``kwargs`` win)."""

        template = self.config.inference.prompt_template if self.config is not None else None
        proc = MoWEProcessor(tokenizer, **{"prompt_template": template, **kwargs})
        check_placeholder_agrees(proc, self.audio_token_id, what="this model")
        return proc
