"""DPO on the fast path: TRL's DPOTrainer with its loss computed over the completion tokens only, its reference
model costing no second copy of the weights, and its per-step host syncs moved off the step.

TRL's DPOTrainer runs each micro-batch as one padded batch `[2B, L]` (the chosen sequences, then the rejected
ones), computes every position's log-probability with its chunked LM head (prompt tokens included, then masked),
and reads about a dozen metrics back from the GPU per micro-batch (`.item()`). `FastDPOSteps`, mixed into TRL's
DPOTrainer (`fast_dpo_trainer`), keeps TRL's data pipeline (tokenisation, `DataCollatorForPreference`,
truncation) and TRL's loss, and changes how they run:

* **packed pairs**: the collator's batch also carries where each real token goes in one packed row and which
  positions predict a completion token (`preference_pack`, worked out on the host); the decoder runs padding-free
  on that row (the fast path's `padding_free`, CUDA graphs and checkpointing apply as for SFT);
* **completion-only log-probabilities** (`preference_logps`): TRL's chunked log-probability kernel
  (`trl.kernels.ChunkedLogProbFunction`) over the positions that predict a completion token, selected by the
  host-side indices, and summed per sequence: the values TRL sums, without the LM head over the prompt tokens;
* **the reference** (`REFERENCES`): `"precomputed"` runs the reference once over the pairs before training, through
  the same packed forward without gradients, and trains on those log-probabilities (TRL's
  `precompute_ref_log_probs` columns, without TRL's hash of every weight and its cache file); `"adapter_off"` runs
  the reference forward every step with the adapter switched off (PEFT's `disable_adapter` through TRL's
  `use_adapter`). Neither keeps a second copy of the base weights. For DPO continuing an SFT adapter the
  reference is that adapter as training starts: the precomputed reference runs it before the first step; the
  per-step reference switches to the frozen copy of the adapter weights TRL keeps ("ref", a LoRA's size);
* **overlapped steps** (`harness.model._overlap.OverlappedSteps`): the metrics TRL logs (`rewards/chosen`,
  `rewards/rejected`, `rewards/accuracies`, `rewards/margins`, `logps/chosen`, `logps/rejected`, `logits/*`,
  `entropy`, `mean_token_accuracy`, `num_tokens`) are kept on the device per micro-batch as sums and logged a step
  late under TRL's names, with TRL's values.

The loss is TRL 1.16's `sigmoid` DPO loss, `-logsigmoid(beta * (chosen log-ratio - rejected log-ratio))`, averaged
over the micro-batch's pairs (TRL's sigmoid loss does not read `label_smoothing`); any other DPOTrainer setting
(another loss type, an f-divergence, `ld_alpha`, WPO weighting, MoE auxiliary loss) runs TRL's own code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from harness.model._overlap import (
    PACK_KEY,
    HostPack,
    HostPacking,
    OverlappedSteps,
    forward_swapped,
    head_at_predicting,
    pack_on_host,
    to_device,
)
from harness.model._parts import backbone_of, unwrap

REFERENCE_ENV = "TUNEGATE_DPO_REFERENCE"  # precomputed | adapter_off: how the fast path gets the reference
REFERENCES = ("precomputed", "adapter_off")
PAIR_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # what the metrics need from the head
# the per-micro-batch sums kept on the device (summed over processes), from which TRL's metrics are rebuilt
DPO_COLUMNS = (
    "pairs",
    "completion_tokens",
    "entropy_sum",
    "chosen_tokens",
    "chosen_logits_sum",
    "rejected_tokens",
    "rejected_logits_sum",
    "chosen_top1",
    "rewards_chosen_sum",
    "rewards_rejected_sum",
    "accuracies_sum",
    "margins_sum",
    "logps_chosen_sum",
    "logps_rejected_sum",
    "real_tokens",
)


def default_reference(passes: float) -> str:
    """The reference a run gets when nobody names one, from how many times it goes over the pairs: one pass costs
    the same reference forward either way, and switching the adapter off inside the step measured faster than a
    separate pass up front (`dpo` in `reports/perf/train_throughput_dpo.json`); from the second pass on, the
    precomputed reference saves a forward per pair per pass."""
    return "precomputed" if passes > 1 + 1e-9 else "adapter_off"


def dpo_reference(requested: str | None = None, passes: float = 1.0) -> str:
    """The reference to use: `requested`, else `TUNEGATE_DPO_REFERENCE`, else `default_reference(passes)`."""
    value = (requested or os.environ.get(REFERENCE_ENV, "") or default_reference(passes)).strip().lower()
    if value not in REFERENCES:
        raise ValueError(f"DPO reference: expected one of {', '.join(REFERENCES)}, got {value!r}")
    return value


def preference_pack(batch: dict[str, Any]) -> HostPack | None:
    """The packing of a host-side preference batch (TRL's DataCollatorForPreference: input_ids, attention_mask,
    completion_mask): its `predicting` positions are those whose next token is a completion token."""
    mask, completion, ids = batch.get("attention_mask"), batch.get("completion_mask"), batch.get("input_ids")
    if not all(isinstance(t, torch.Tensor) for t in (mask, completion, ids)) or mask.is_cuda:
        return None
    labels = ids.masked_fill(completion == 0, -100)
    return pack_on_host(mask, labels)


class PreferencePacking(HostPacking):
    """A data collator that adds each preference batch's HostPack (under PACK_KEY) to what TRL's collator returns."""

    def pack(self, batch: dict[str, Any]) -> HostPack | None:
        return preference_pack(batch)


def logit_scaling(causal_lm: Any) -> str | None:
    """The config key of a model that scales or soft-caps its logits (TRL's head handles those; this one not)."""
    config = causal_lm.config.get_text_config()
    return next(
        (
            k
            for k in (
                "final_logit_softcapping",
                "logit_scale",
                "output_multiplier",
                "lm_head_multiplier",
                "logits_scaling",
            )
            if getattr(config, k, None) is not None
        ),
        None,
    )


def preference_logps(
    causal_lm: Any,
    backbone: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pack: HostPack,
    outputs: tuple[str, ...],
    *,
    packed: bool,
) -> tuple[torch.Tensor | None, ...]:
    """Per-token (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1), each [N] over the positions that
    predict a completion token (`pack.predicting`, in order; None for outputs not asked for): the backbone
    (padding-free on the pack's row when `packed`), then TRL's chunked log-probability kernel on those positions."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if packed:
        kwargs[PACK_KEY] = pack
    hidden = backbone(**kwargs).last_hidden_state
    return head_at_predicting(causal_lm, hidden, input_ids, pack, outputs)


def sequence_sums(per_token: torch.Tensor, pack: HostPack) -> torch.Tensor:
    """[N] per predicting position -> [rows] summed per sequence of the batch (rows of the padded [B, L] batch).

    The values are put back in their [B, L] places (each written once) and each row is summed as one reduction,
    as TRL sums a sequence's masked log-probabilities: an order fixed by the shape, the same on every run.
    (`index_add` on CUDA adds with atomics in whatever order the threads arrive, so two runs of the same step could
    differ in the last bit, and DPO's training would drift apart from there.)"""
    rows, width = pack.shape
    places = to_device(pack.predicting, per_token.device)
    return per_token.new_zeros(rows * width).index_copy(0, places, per_token).view(rows, width).sum(-1)


def chosen_positions(pack: HostPack) -> int:
    """How many of the predicting positions are in the chosen half (rows < B/2): they come first, in order."""
    rows, width = pack.shape
    return int((pack.predicting < (rows // 2) * width).sum())


@contextmanager
def preference_head(causal_lm: Any, backbone: torch.nn.Module, packed: bool) -> Iterator[None]:
    """While active, `model(input_ids=..., attention_mask=..., dpo_pack=HostPack, dpo_outputs=(...))` (through any
    wrapper: PEFT, DDP) returns `preference_logps`; other calls run the model's own forward (TRL's fused head)."""
    previous = causal_lm.__dict__.get("forward") or causal_lm.forward

    def forward(
        *args: Any, dpo_pack: HostPack | None = None, dpo_outputs: tuple[str, ...] | None = None, **kwargs: Any
    ) -> Any:
        if dpo_pack is None:
            return previous(*args, **kwargs)
        return preference_logps(
            causal_lm,
            backbone,
            kwargs["input_ids"],
            kwargs["attention_mask"],
            dpo_pack,
            dpo_outputs or ("log_probs",),
            packed=packed,
        )

    with forward_swapped(causal_lm, forward, previous):
        yield


class FastDPOSteps(OverlappedSteps):
    """Mixed into TRL's DPOTrainer (`fast_dpo_trainer`): the DPO loss over the completion tokens of packed pairs,
    TRL's metrics kept on the device and logged a step late (or at once when `log_late` is False). The reference
    is computed once before training with `precompute` (`_precompute_reference`; the DPOConfig leaves TRL's own
    `precompute_ref_log_probs` off), else every step with the adapter off (`fresh_adapter`) or switched to TRL's
    frozen copy of it ("ref"). Settings this does not cover run TRL's own code."""

    def __init__(
        self,
        *args: Any,
        fresh_adapter: bool = True,
        precompute: bool = False,
        packed: bool = True,
        log_late: bool = True,
        **kwargs: Any,
    ) -> None:
        self._fresh_adapter = fresh_adapter  # the adapter starts at zero: the reference is the base model
        self._packed = packed
        self._log_late = log_late
        self.reference_seconds = 0.0  # spent precomputing the reference (in the constructor, before training)
        model = kwargs.get("model", args[0] if args else None)
        self._causal_lm = unwrap(model)
        self._backbone = backbone_of(self._causal_lm)
        super().__init__(*args, **kwargs)
        self.data_collator = PreferencePacking(self.data_collator.collate)
        peft_config = getattr(self.model, "peft_config", {})
        if "ref" in peft_config and self._fresh_adapter:
            # the copy TRL made of a fresh (zero) adapter for the reference: the adapter switched off is the same
            self.model.delete_adapter("ref")
        if precompute:
            self._precompute_reference()

    def _precompute_reference(self) -> None:
        """The reference log-probabilities of every training pair, once, before training (TRL's
        `precompute_ref_log_probs`, whose columns `ref_chosen_logps` and `ref_rejected_logps` TRL's collator and
        loss read): through the packed completion-only head, without TRL's hash of every weight and its cache
        file. Settings this class does not cover precompute with TRL's own code."""
        started = time.perf_counter()
        dataset = self.train_dataset
        batch = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
        if not self._fast_applies():
            dataset = self._precompute_ref_logps(dataset, "train", batch)
        else:
            collate, device = self.data_collator.collate, self.accelerator.device
            chosen: list[torch.Tensor] = []
            rejected: list[torch.Tensor] = []
            # the reference as training starts: a fresh adapter switched off, a continued one as it is now
            reference = self._reference_context(self.model) if self._fresh_adapter else nullcontext()
            ids = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
            with torch.no_grad(), reference, self.accelerator.autocast():
                for start in range(0, len(dataset), batch):
                    part = ids[start : start + batch]
                    host = collate([dict(zip(part, row, strict=True)) for row in zip(*part.values(), strict=True)])
                    pack = preference_pack(host)
                    if pack is None or pack.predicting is None:
                        raise ValueError("a preference batch without completion tokens cannot be precomputed")
                    (log_probs, *_) = preference_logps(
                        self._causal_lm,
                        self._backbone,
                        to_device(host["input_ids"], device),
                        to_device(host["attention_mask"], device),
                        pack,
                        ("log_probs",),
                        packed=self._packed,
                    )
                    c, r = sequence_sums(log_probs, pack).chunk(2, dim=0)
                    chosen.append(c.float().cpu())
                    rejected.append(r.float().cpu())
            dataset = dataset.add_column("ref_chosen_logps", torch.cat(chosen).numpy()).add_column(
                "ref_rejected_logps", torch.cat(rejected).numpy()
            )
        self.train_dataset = dataset
        self.precompute_ref_logps = True
        self.reference_seconds = time.perf_counter() - started

    def _fast_applies(self) -> bool:
        """TRL's sigmoid DPO loss without the extras this class does not reproduce, on a text model."""
        return (
            hasattr(self, "_metrics")
            and hasattr(self, "_total_train_tokens")
            and list(self.loss_types) == ["sigmoid"]
            and self.f_divergence_type == "reverse_kl"
            and self.ld_alpha is None
            and not self.use_weighting
            and not self.aux_loss_enabled
            and not self._is_vision_dataset
            and logit_scaling(self._causal_lm) is None
        )

    def _overlap_applies(self) -> bool:
        return self._fast_applies()

    def _is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.accelerator.unwrap_model(self.model), PeftModel)

    def _reference_context(self, model: Any) -> Any:
        """The adapter state the reference forward runs in: off for a fresh adapter, the "ref" copy otherwise (the
        model as it is for full fine-tuning: only the precomputed reference, before training, applies there)."""
        from trl.trainer.utils import use_adapter

        if not self._is_peft():
            return nullcontext()
        unwrapped = self.accelerator.unwrap_model(model)
        name = "ref" if not self._fresh_adapter and "ref" in unwrapped.peft_config else None
        return use_adapter(unwrapped, adapter_name=name)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        with preference_head(self._causal_lm, self._backbone, self._packed):
            return super().train(*args, **kwargs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        pack = inputs.pop(PACK_KEY, None)
        reference_ready = self.precompute_ref_logps or (self.ref_model is None and self._is_peft())
        if (
            return_outputs
            or not isinstance(pack, HostPack)
            or pack.predicting is None
            or not self._fast_applies()
            or not reference_ready
        ):
            if self.model.training:
                # the Trainer does not count tokens in an overlapped run (include_num_input_tokens_seen="no")
                self.state.num_input_tokens_seen += int(self.accelerator.gather(inputs["attention_mask"].sum()).sum())
            return super(OverlappedSteps, self).compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        mode = "train" if self.model.training else "eval"
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        log_probs, entropy, _, mean_logits, is_top1 = model(
            input_ids=ids, attention_mask=mask, dpo_pack=pack, dpo_outputs=PAIR_OUTPUTS
        )
        chosen_logps, rejected_logps = sequence_sums(log_probs, pack).chunk(2, dim=0)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            with torch.no_grad(), self._reference_context(model):
                (ref_log_probs, *_) = model(
                    input_ids=ids, attention_mask=mask, dpo_pack=pack, dpo_outputs=("log_probs",)
                )
            ref_chosen, ref_rejected = sequence_sums(ref_log_probs, pack).chunk(2, dim=0)
        chosen_logratios = chosen_logps - ref_chosen
        rejected_logratios = rejected_logps - ref_rejected
        loss = (-F.logsigmoid(self.beta * (chosen_logratios - rejected_logratios))).mean()
        self._device_metrics[mode].append(
            self._metric_sums(
                pack,
                chosen_logps.detach(),
                rejected_logps.detach(),
                chosen_logratios.detach(),
                rejected_logratios.detach(),
                entropy.detach(),
                mean_logits.detach(),
                is_top1.detach(),
            )
        )
        return loss

    def _metric_sums(
        self,
        pack: HostPack,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        chosen_logratios: torch.Tensor,
        rejected_logratios: torch.Tensor,
        entropy: torch.Tensor,
        mean_logits: torch.Tensor,
        is_top1: torch.Tensor,
    ) -> torch.Tensor:
        """One micro-batch's DPO_COLUMNS on the device (no host sync: the counts come from the host-side pack)."""
        n_chosen = chosen_positions(pack)
        total = int(pack.predicting.numel())
        chosen_rewards, rejected_rewards = self.beta * chosen_logratios, self.beta * rejected_logratios

        def const(value: float) -> torch.Tensor:  # filled on the device: no host-to-device copy to wait for
            return chosen_logps.new_full((), float(value), dtype=torch.float32)

        values = [
            const(chosen_logps.numel()),
            const(total),
            entropy.float().sum(),
            const(n_chosen),
            mean_logits[:n_chosen].float().sum(),
            const(total - n_chosen),
            mean_logits[n_chosen:].float().sum(),
            is_top1[:n_chosen].float().sum(),
            chosen_rewards.float().sum(),
            rejected_rewards.float().sum(),
            (chosen_rewards > rejected_rewards).float().sum(),
            (chosen_rewards - rejected_rewards).float().sum(),
            chosen_logps.float().sum(),
            rejected_logps.float().sum(),
            const(pack.tokens),
        ]
        return torch.stack([v.float() for v in values])

    def _metric_rows(self, mode: str, rows: list[list[float]]) -> int:
        """TRL's per-micro-batch DPO metrics from summed rows (DPO_COLUMNS); returns the real tokens."""
        tokens = 0
        metrics = self._metrics[mode]
        for row in rows:
            r = dict(zip(DPO_COLUMNS, row, strict=True))
            pairs = max(r["pairs"], 1.0)

            def ratio(a: float, b: float) -> float:
                return a / b if b > 0 else 0.0

            metrics["entropy"].append(ratio(r["entropy_sum"], r["completion_tokens"]))
            metrics["logits/chosen"].append(ratio(r["chosen_logits_sum"], r["chosen_tokens"]))
            metrics["logits/rejected"].append(ratio(r["rejected_logits_sum"], r["rejected_tokens"]))
            metrics["mean_token_accuracy"].append(ratio(r["chosen_top1"], r["chosen_tokens"]))
            metrics["rewards/chosen"].append(r["rewards_chosen_sum"] / pairs)
            metrics["rewards/rejected"].append(r["rewards_rejected_sum"] / pairs)
            metrics["rewards/accuracies"].append(r["accuracies_sum"] / pairs)
            metrics["rewards/margins"].append(r["margins_sum"] / pairs)
            metrics["logps/chosen"].append(r["logps_chosen_sum"] / pairs)
            metrics["logps/rejected"].append(r["logps_rejected_sum"] / pairs)
            tokens += round(r["real_tokens"])
        return tokens

    def _flush_logs(self, start_time: float | None, keep: int = 0) -> None:
        super()._flush_logs(start_time, keep=keep if self._log_late else 0)


def fast_dpo_trainer(trainer_class: type) -> type:
    """`trainer_class` (TRL's DPOTrainer) with FastDPOSteps mixed in."""
    return type(f"Fast{trainer_class.__name__}", (FastDPOSteps, trainer_class), {})
