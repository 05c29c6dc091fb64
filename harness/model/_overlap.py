"""Training steps that never wait for the GPU (the fast path's `overlap`).

With the decoder layers replayed as CUDA graphs, a training step of the 1.07B bench costs ~78 ms of GPU work and
~27 ms of CPU work, and ran in ~107 ms: the two did not overlap. Each step stopped ~16 times to read a value from
the GPU (the profile's `cudaStreamSynchronize`), and after every stop the GPU idled while the CPU prepared the
next piece of work. The stops, and what replaces each here:

* the packed row's sequence lengths (`pack_from_mask` read the attention mask back from the GPU): `HostPacking`
  works them out in the data collator, on the host, before the batch goes to the GPU (`PACK_KEY`);
* TRL's SFT loss head selects the positions with a label by boolean masks (`hidden[mask]`, a `nonzero` that waits
  for the GPU, forward and backward): `host_indexed_head` selects them by the positions the collator found;
* TRL's entropy and token-accuracy metrics and its token count (`.item()` per micro-batch), the Trainer's token
  count (`include_num_input_tokens_seen`), its NaN filter (`torch.isnan(loss) or ...`) and the per-step loss
  log (`loss.item()`): `OverlappedSteps` keeps the metrics and the token counts (from the host-side packing) on
  the device, sums them over the processes of a data-parallel run by collectives, and logs each step one step
  late, from copies made without waiting;
* the batch's copy to the GPU: pinned memory, copied without blocking (`accelerator_config.non_blocking`).

So the CPU prepares step n+1 while the GPU runs step n, and the GPU's queue never runs dry. Nothing here changes a
value: the same tokens, loss, gradients and logged rows (a step's row is written when the next step has been
queued, and a diverging loss stops training one step later than before).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers.trainer_utils import speed_metrics

PACK_KEY = "tunegate_pack"  # the batch key (and model keyword) that carries a HostPack
SFT_HEAD_OUTPUTS = ("log_probs", "entropy", "is_top1")  # what TRL's SFTTrainer asks its fused head for


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without waiting: pinned memory, copied asynchronously (a copy from pageable
    memory makes the host wait for the GPU)."""
    if device.type != "cuda":
        return t.to(device)
    return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)


@dataclass(frozen=True)
class HostPack:
    """Where the real tokens of a right- (or left-) padded [B, L] batch go in one packed row, and which positions
    predict a label: worked out on the host from the collated attention mask and labels."""

    shape: tuple[int, int]  # (B, L) of the batch it describes
    lengths: tuple[int, ...]  # real tokens of each non-empty row
    index: torch.Tensor  # int64 [T]: flat positions (in B*L) of the real tokens, in order
    position_ids: torch.Tensor  # int64 [1, T], restarting at 0 per sequence
    cu_seq_lens: torch.Tensor  # int32 [n+1]
    predicting: torch.Tensor | None  # int64 [N]: flat positions p (in B*L) whose next token (p+1) has a label
    predicting_shifted: torch.Tensor | None  # the same positions in the shifted [B, L-1] grid

    @property
    def tokens(self) -> int:
        return sum(self.lengths)

    def pin_memory(self) -> HostPack:
        """Called by the DataLoader (pin_memory=True) on every value of the batch."""
        tensors = ("index", "position_ids", "cu_seq_lens", "predicting", "predicting_shifted")
        return replace(self, **{k: v.pin_memory() for k in tensors if (v := getattr(self, k)) is not None})


def packed_layout(
    rows: list[tuple[int, int]], width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]] | None:
    """The packed row of a [B, width] batch whose row b has `n` real tokens from column `start` (rows[b] =
    (start, n)): the flat positions (in B*width) of the real tokens, position ids restarting at 0 per sequence
    [1, T], the sequence boundaries (int32), and the lengths of the non-empty rows; None when no row has a token."""
    index, positions, lengths = [], [], []
    for row, (start, n) in enumerate(rows):
        if n:
            index.append(torch.arange(row * width + start, row * width + start + n))
            positions.append(torch.arange(n))
            lengths.append(n)
    if not lengths:
        return None
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return torch.cat(index), torch.cat(positions).unsqueeze(0), cu, tuple(lengths)


def row_spans(mask: torch.Tensor) -> list[tuple[int, int]] | None:
    """(start, n) of each row's real tokens in a 2D attention mask ((0, 0) for an empty row); None when a row's
    real tokens are not contiguous. Reads the mask back to the host once."""
    mask = mask.bool()
    runs = mask[:, :1].int() + (mask[:, 1:] & ~mask[:, :-1]).sum(1, keepdim=True).int()
    stats = torch.cat([mask.sum(1, keepdim=True).int(), runs, mask.int().argmax(1, keepdim=True).int()], 1)
    rows = stats.tolist()
    if any(r[1] > 1 for r in rows):
        return None
    return [(start if n else 0, n) for n, _, start in rows]


def pack_on_host(mask: torch.Tensor, labels: torch.Tensor | None = None) -> HostPack | None:
    """The packing of a batch from its host-side attention mask [B, L] (and labels [B, L]); None when a row's real
    tokens are not contiguous or the batch has none (the forward then works it out itself)."""
    if mask.dim() != 2 or mask.is_cuda:
        return None
    batch, width = mask.shape
    spans = row_spans(mask)
    layout = packed_layout(spans, width) if spans is not None else None
    if layout is None:
        return None
    index, position_ids, cu, lengths = layout
    predicting = shifted = None
    if labels is not None and labels.shape == mask.shape and width > 1:
        rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
        predicting = rows * width + cols
        shifted = rows * (width - 1) + cols
    return HostPack(
        shape=(batch, width),
        lengths=lengths,
        index=index,
        position_ids=position_ids,
        cu_seq_lens=cu,
        predicting=predicting,
        predicting_shifted=shifted,
    )


class HostPacking:
    """A data collator that adds each batch's HostPack (under PACK_KEY) to what the wrapped collator returns."""

    def __init__(self, collate: Callable[[list[Any]], dict[str, Any]]) -> None:
        self.collate = collate

    def __call__(self, features: list[Any]) -> dict[str, Any]:
        batch = self.collate(features)
        pack = self.pack(batch)
        if pack is not None:
            batch[PACK_KEY] = pack
        return batch

    def pack(self, batch: dict[str, Any]) -> HostPack | None:
        """The batch's HostPack, from its attention mask and labels (None: nothing to pack)."""
        mask = batch.get("attention_mask")
        return pack_on_host(mask, batch.get("labels")) if isinstance(mask, torch.Tensor) else None

    def __getattr__(self, name: str) -> Any:  # the trainer reads the wrapped collator's settings
        if name == "collate":
            raise AttributeError(name)
        return getattr(self.collate, name)


def head_at_predicting(
    model: Any, hidden: torch.Tensor, token_ids: torch.Tensor, pack: HostPack, outputs: tuple[str, ...]
) -> tuple[torch.Tensor | None, ...]:
    """TRL's chunked log-probability kernel (`trl.kernels.ChunkedLogProbFunction`) on the LM head, over only the
    positions that predict a target (`pack.predicting`, in order): per-token outputs, each [N] (None for outputs
    not asked for). `hidden` is the backbone's [B, L, H]; `token_ids` [B, L] hold the targets one position on."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    size = hidden.shape[-1]
    head = model.get_output_embeddings()
    predicting = to_device(pack.predicting, hidden.device)
    targets = token_ids.reshape(-1).index_select(0, predicting + 1)
    return ChunkedLogProbFunction.apply(
        hidden.reshape(-1, size).index_select(0, predicting).to(head.weight.device),
        head.weight,
        head.bias,
        targets.to(head.weight.device),
        1.0,
        _CHUNKED_LOGPROB_CHUNK_SIZE,
        None,
        1.0,
        outputs,
    )


@contextmanager
def host_indexed_head(model: Any, backbone: torch.nn.Module) -> Iterator[str]:
    """TRL's fused SFT loss head (`add_fused_lm_head`) selecting the positions with a label by the indices the
    collator worked out (a HostPack), instead of boolean masks that wait for the GPU. The same chunked kernel
    (`trl.kernels.ChunkedLogProbFunction`), on the same positions in the same order: the same values. Calls without
    a HostPack, or for models that scale or soft-cap their logits, run TRL's head."""
    previous = model.__dict__.get("forward")
    if previous is None:
        yield "off: the model has no fused LM head (not a TRL SFT model)"
        return
    try:
        from trl.kernels import ChunkedLogProbFunction  # noqa: F401 - head_at_predicting needs it
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, FusedCausalLMOutput  # noqa: F401
    except ImportError as exc:
        yield f"off: this TRL has no chunked log-probability kernel ({exc})"
        return
    config = model.config.get_text_config()
    scaled = [
        k
        for k in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
        if getattr(config, k, None) is not None
    ]
    if scaled:
        yield f"off: the model scales its logits ({scaled[0]})"
        return

    def forward(
        *args: Any,
        fused_lm_head: bool = False,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        pack = kwargs.get(PACK_KEY)
        if (
            not fused_lm_head
            or labels is None
            or shift_labels is not None
            or not isinstance(pack, HostPack)
            or pack.predicting is None
            or tuple(labels.shape) != pack.shape
        ):
            return previous(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden = backbone(*args, **kwargs).last_hidden_state
        batch, width, _ = hidden.shape
        per_token = head_at_predicting(model, hidden, labels, pack, SFT_HEAD_OUTPUTS)
        shifted = to_device(pack.predicting_shifted, per_token[0].device)

        def spread(x: torch.Tensor | None) -> torch.Tensor | None:  # [N] -> [B, L-1], zero where no label
            if x is None:
                return None
            return x.new_zeros(batch * (width - 1)).index_copy(0, shifted, x).view(batch, width - 1)

        log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = (spread(x) for x in per_token)
        mask = labels[:, 1:] != -100
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            entropy=entropy,
            log_sum_sq_probs=log_sum_sq_probs,
            mean_logits=mean_logits,
            is_top1=is_top1,
            label_mask=mask,
        )

    with forward_swapped(model, forward, previous):
        yield "on"


@contextmanager
def forward_swapped(model: Any, forward: Callable[..., Any], previous: Callable[..., Any]) -> Iterator[None]:
    """`model.forward` is `forward` for the duration, then `previous` again (unless something replaced it since)."""
    model.forward = forward
    try:
        yield
    finally:
        if model.__dict__.get("forward") is forward:
            model.forward = previous


@dataclass
class _DeferredLog:
    """A step's log, copied off the device without waiting; read once `ready` has passed."""

    loss_sum: torch.Tensor  # host copy of the loss summed since the last log (mean over processes)
    grad_norm: torch.Tensor | float | None
    metrics: torch.Tensor | None  # host copy of [micro-batches, 4] (METRIC_COLUMNS, summed over processes)
    learning_rate: float | None
    flos: torch.Tensor | float  # floating-point operations since the last log, summed over processes
    steps: int
    global_step: int
    epoch: float | None
    ready: Any  # a CUDA event (None on CPU: the copies were synchronous)


METRIC_COLUMNS = ("label_tokens", "entropy_sum", "top1_hits", "real_tokens")  # per micro-batch, on the device


def _off_device(t: torch.Tensor) -> torch.Tensor:
    if t.device.type != "cuda":
        return t.detach().clone().cpu()
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t.detach(), non_blocking=True)


class OverlappedSteps:
    """Mixed into TRL's SFTTrainer (`overlapped_trainer`): the per-step host syncs of the plain SFT loss (TRL's
    metrics and token count, the Trainer's token count and loss log) moved off the step. The values are kept on
    the device, summed over the processes of a data-parallel run by collectives (which do not make the host
    wait), and read when the step is logged, a step late. Applies to TRL's own token-mean loss; any other
    configuration (or a batch without a HostPack) runs TRL's code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_collator = HostPacking(self.data_collator)
        self._device_metrics: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}
        self._deferred: list[_DeferredLog] = []

    def _overlap_applies(self) -> bool:
        """TRL's plain token-mean SFT loss, and the TRL internals this class keeps up (`_metrics`,
        `_total_train_tokens`, as in TRL 1.16): otherwise TRL's own code runs."""
        return (
            hasattr(self, "_metrics")
            and hasattr(self, "_total_train_tokens")
            and self.compute_loss_func is None
            and self.label_smoother is None
            and getattr(self.args, "loss_type", "nll") == "nll"
            and not getattr(self, "aux_loss_enabled", False)
        )

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        pack = inputs.get(PACK_KEY)
        if return_outputs or not isinstance(pack, HostPack) or not self._overlap_applies():
            if self.model.training and isinstance(inputs.get("attention_mask"), torch.Tensor):
                # the Trainer does not count tokens in an overlapped run (include_num_input_tokens_seen="no")
                self.state.num_input_tokens_seen += int(self.accelerator.gather(inputs["attention_mask"].sum()).sum())
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        mask = outputs.label_mask
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -outputs.log_probs.sum() / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients over processes
        labelled = mask.sum().float()
        self._device_metrics[mode].append(
            torch.stack(
                [
                    labelled,
                    outputs.entropy.detach().float().sum(),
                    outputs.is_top1.float().sum(),
                    labelled.new_full((), float(pack.tokens)),
                ]
            )
        )
        return loss

    def _summed_over_processes(self, rows: torch.Tensor) -> torch.Tensor:
        """[micro-batches, k] of this process -> the same summed over every process (an all-gather)."""
        world = self.accelerator.num_processes
        if world == 1:
            return rows
        return self.accelerator.gather(rows.contiguous()).view(world, *rows.shape).sum(0)

    def _maybe_log_save_evaluate(
        self,
        tr_loss: torch.Tensor,
        grad_norm: Any,
        model: Any,
        trial: Any,
        epoch: Any,
        ignore_keys_for_eval: Any,
        start_time: float,
        learning_rate: float | None = None,
        **kwargs: Any,
    ) -> None:
        due = self.control.should_log and self.state.global_step > self._globalstep_last_logged
        if due and self._overlap_applies():
            self._defer_log(tr_loss, grad_norm, learning_rate)
            self._flush_logs(start_time, keep=1)  # the earlier steps': the GPU has finished them or is about to
            self.control.should_log = False
        if (
            self.control.should_evaluate
            or self.control.should_save
            or self.control.should_training_stop
            or self.control.should_epoch_stop
            or self.state.global_step >= self.state.max_steps
        ):
            self._flush_logs(start_time)
        super()._maybe_log_save_evaluate(
            tr_loss,
            grad_norm,
            model,
            trial,
            epoch,
            ignore_keys_for_eval,
            start_time,
            learning_rate=learning_rate,
            **kwargs,
        )

    def _defer_log(self, tr_loss: torch.Tensor, grad_norm: Any, learning_rate: float | None) -> None:
        loss_sum = tr_loss.detach().clone()
        if self.accelerator.num_processes > 1:  # the Trainer logs the mean over processes
            loss_sum = self.accelerator.gather(loss_sum).float().mean()
        loss_sum = _off_device(loss_sum)
        tr_loss -= tr_loss  # as the Trainer does once it has read the loss
        pending = self._device_metrics["train"]
        metrics = _off_device(self._summed_over_processes(torch.stack(pending))) if pending else None
        pending.clear()
        norm = _off_device(grad_norm) if isinstance(grad_norm, torch.Tensor) else grad_norm
        ready = None
        if tr_loss.device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record()
        self._deferred.append(
            _DeferredLog(
                loss_sum=loss_sum,
                grad_norm=norm,
                metrics=metrics,
                learning_rate=learning_rate if learning_rate is not None else self._get_learning_rate(),
                flos=self._flos_over_processes(),
                steps=self.state.global_step - self._globalstep_last_logged,
                global_step=self.state.global_step,
                epoch=self.state.epoch,
                ready=ready,
            )
        )
        self._globalstep_last_logged = self.state.global_step

    def _flos_over_processes(self) -> torch.Tensor | float:
        """The Trainer's `store_flos` without its wait: under data parallel it sums the processes' counts with a
        broadcast and `.item()`, a host sync every logged step; here the sum stays on the device until the step is
        logged."""
        flos, self.current_flos = float(self.current_flos), 0
        if self.accelerator.num_processes == 1:
            return flos
        mine = torch.full((1,), flos, dtype=torch.float64, device=self.accelerator.device)
        return _off_device(self._summed_over_processes(mine))

    def _metric_rows(self, mode: str, rows: list[list[float]]) -> int:
        """TRL's per-micro-batch entropy and token accuracy from summed rows; returns the real tokens."""
        tokens = 0
        for labelled, entropy, top1, real in rows:
            self._metrics[mode]["entropy"].append(entropy / labelled if labelled > 0 else 0.0)
            self._metrics[mode]["mean_token_accuracy"].append(top1 / labelled if labelled > 0 else 0.0)
            tokens += round(real)
        return tokens

    def _flush_logs(self, start_time: float | None, keep: int = 0) -> None:
        """Log the deferred steps but the last `keep`, in order, each as the Trainer would have at its own step
        (the state says that step while it is logged)."""
        while len(self._deferred) > keep:
            entry = self._deferred.pop(0)
            if entry.ready is not None:
                entry.ready.synchronize()
            loss_sum = float(entry.loss_sum)
            self.state.total_flos += float(entry.flos)
            if entry.metrics is not None:
                tokens = self._metric_rows("train", entry.metrics.tolist())
                self.state.num_input_tokens_seen += tokens
                self._total_train_tokens += tokens
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            logs: dict[str, float] = {"loss": loss_sum / max(entry.steps, 1)}
            if entry.grad_norm is not None:
                logs["grad_norm"] = float(entry.grad_norm)
            logs["learning_rate"] = entry.learning_rate
            self._total_loss_scalar += loss_sum
            state = self.state
            now = (state.global_step, state.epoch)
            state.global_step, state.epoch = entry.global_step, entry.epoch
            try:
                self.log(logs, start_time)
            finally:
                state.global_step, state.epoch = now

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        pending = self._device_metrics.get(mode)
        if mode == "eval" and pending:  # evaluation logs at once (training's are read with their step)
            self._metric_rows(mode, self._summed_over_processes(torch.stack(pending)).tolist())
            pending.clear()
        if self.args.include_num_input_tokens_seen == "no":  # what the Trainer adds when it counts tokens itself
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                seen = self.state.num_input_tokens_seen - getattr(self, "_initial_num_input_tokens_seen", 0)
                logs |= speed_metrics("train", start_time, num_tokens=seen)
        super().log(logs, start_time)


def overlapped_trainer(trainer_class: type) -> type:
    """`trainer_class` (TRL's SFTTrainer) with OverlappedSteps mixed in."""
    return type(f"Overlapped{trainer_class.__name__}", (OverlappedSteps, trainer_class), {})


def overlap_args(device: str) -> dict[str, Any]:
    """Trainer arguments of an overlapped run: tokens are counted on the host (OverlappedSteps), a non-finite
    loss is logged as it is (the step logger stops the run on it) instead of tested on the host every step, and
    on a GPU batches are copied from pinned memory without blocking."""
    args: dict[str, Any] = {"include_num_input_tokens_seen": "no", "logging_nan_inf_filter": False}
    if device == "cuda":
        args |= {"dataloader_pin_memory": True, "accelerator_config": {"non_blocking": True}}
    return args
