"""CUDA graphs over the decoder layers (harness.model._graphs): the bucketing and padding, checked on the CPU
against the unpadded forward, and the graphs themselves against eager training on a GPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.model import _attention as attn
from harness.model import _fastpath as fp
from harness.model import _graphs as gr
from harness.model import _memory_plan as memplan
from harness.model import _packing as packing
from harness.model import _parts as parts
from tests.model.test_fastpath import CUDA, padded_batch, tiny_llama, with_lora


def test_default_fast_path_has_graphs_unless_the_environment_turns_them_off(monkeypatch):
    monkeypatch.delenv(fp.CUDA_GRAPHS_ENV, raising=False)
    assert fp.FastPath.for_device("cuda").cuda_graphs and fp.FastPath.for_device("cpu") is None
    for off in ("0", "off", "False"):
        monkeypatch.setenv(fp.CUDA_GRAPHS_ENV, off)
        assert fp.FastPath.for_device("cuda") == fp.FastPath(cuda_graphs=False)
    monkeypatch.setenv(fp.CUDA_GRAPHS_ENV, "1")
    assert fp.FastPath.for_device("cuda").cuda_graphs


def test_buckets_cover_the_row_with_bounded_padding():
    previous = 0
    for tokens in range(1, 20000, 7):
        b = gr.bucket_tokens(tokens)
        assert b >= tokens and b >= previous and b % gr.MIN_BUCKET == 0
        assert b - tokens < max(tokens / 4, gr.MIN_BUCKET)  # padding: at most a fifth of a row > 2k tokens
        previous = b
    sizes = {gr.bucket_tokens(t) for t in range(1000, 8193)}
    assert sizes == {1024, 1536, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192}  # captures for 8 x 1024
    assert [gr.sequence_slots(n) for n in (1, 8, 9, 16, 17)] == [8, 8, 16, 16, 32]


def test_padded_row_keeps_the_real_boundaries_and_makes_no_empty_sequence():
    for lengths in [(24, 17, 6), (500,) * 8, (1,), (1000, 3, 3, 3, 3, 3, 3, 3, 3)]:
        row = gr.PaddedRow.of(lengths)
        cu = row.cu_seq_lens()
        assert len(cu) == row.slots + 2 and cu[-1] == row.bucket
        assert cu[: len(lengths) + 1] == [0, *torch.tensor(lengths).cumsum(0).tolist()]
        assert all(b > a for a, b in zip(cu, cu[1:]))
    with pytest.raises(ValueError, match="do not fit"):
        gr.PaddedRow((10, 10), 21, 8).cu_seq_lens()


def _packed_inputs(model, lengths):
    """Hidden states and rotary tables of one packed row, as the backbone hands them to its layers."""
    backbone = parts.backbone_of(parts.unwrap(model))
    ids, mask = padded_batch(lengths=lengths)
    row = packing.pack_from_mask(mask)
    hidden = backbone.embed_tokens(ids.reshape(-1)[row.index].unsqueeze(0))
    cos, sin = backbone.rotary_emb(hidden, position_ids=row.position_ids)
    return backbone, row, hidden, cos, sin


def test_padded_layers_equal_the_unpadded_forward_and_gradients():
    """What a graph replays (the real tokens plus padding sequences in a bucket) is what the backbone computes:
    same outputs on the real tokens, same adapter gradients."""
    model = with_lora(tiny_llama(layers=3), dropout=0.0).train()
    session = fp.FastSession(fp.FastPath(checkpointing="none"), "cpu")
    session.patch_model(model)
    try:
        backbone, row, hidden, cos, sin = _packed_inputs(model, (24, 17, 6))
        layers = parts.decoder_layers(backbone)
        params = [p for layer in layers for p in layer.parameters() if p.requires_grad]
        weights = torch.randn(1, sum(row.lengths), hidden.shape[-1], generator=torch.Generator().manual_seed(3))

        def grads_of(out):
            return torch.autograd.grad((out * weights).sum(), params)

        plain = gr.run_layers(layers, hidden, cos, sin, row.cu_seq_lens, row.max_length, {})
        padded_row = gr.PaddedRow.of(row.lengths)
        cu = torch.tensor(padded_row.cu_seq_lens(), dtype=torch.int32)
        b = padded_row.bucket
        buffers = []
        for real in (hidden, cos, sin):  # the graph's static inputs, as `_StackGraph.load` fills them
            static = torch.full((1, b, real.shape[-1]), float("nan"), dtype=real.dtype)
            gr.fill_padded(static, real)
            buffers.append(static)
        padded = gr.run_layers(layers, *buffers, cu, b, {})[:, : padded_row.tokens]
        torch.testing.assert_close(padded, plain, atol=1e-5, rtol=1e-5)
        for g_padded, g_plain in zip(grads_of(padded), grads_of(plain), strict=True):
            torch.testing.assert_close(g_padded, g_plain, atol=1e-6, rtol=1e-4)
    finally:
        session.close()


def test_off_on_cpu_says_why_and_layers_run_eagerly_when_graphs_cannot_replay():
    model = with_lora(tiny_llama()).train()
    session = fp.FastSession(fp.FastPath(checkpointing="none", cuda_graphs=True), "cpu")
    session.patch_model(model)
    ids, mask = padded_batch()
    reference = model(input_ids=ids, attention_mask=mask).logits
    plan = session.plan(model, [24, 17, 6], micro_batch=3, accumulation=1)
    with session.training(model, plan):
        assert session._graphs is None
    assert session.report.cuda_graphs == "off: needs CUDA"
    # forced on, a CPU forward cannot replay: the stand-in runs the real layers, with the same result
    backbone = parts.backbone_of(parts.unwrap(model))
    layers = list(backbone.layers)
    graphs = gr.LayerGraphs(layers)
    graphs.enabled = True
    session._graphs = graphs
    try:
        stood_in = model(input_ids=ids, attention_mask=mask).logits
    finally:
        session._graphs = None
        session.close()
    assert list(backbone.layers) == layers  # the layer list is back
    real = mask.bool()
    torch.testing.assert_close(stood_in[real], reference[real], atol=2e-5, rtol=1e-4)
    assert graphs.eager == {"no gradient or not CUDA": 1} and graphs.replays == 0
    assert graphs.summary() == "on: 0 bucket(s) captured in 0.0 s, 0 replays, eager: no gradient or not CUDA x1"


def test_graphs_only_where_the_timed_eager_forward_was_bound_by_the_host(monkeypatch):
    """Each padded length is first timed eagerly (the process's first timing twice: lazy initialisation slows its
    host side); it is captured only where the device was not GRAPH_GPU_BOUND times busier than the host."""
    assert gr.gpu_bound(0.010, 0.013) and not gr.gpu_bound(0.010, 0.011)

    class Timing:  # what the CUDA events would read back: None while the device still runs the forward
        def __init__(self, host, device, first=False):
            self.host_seconds, self.device, self.first = host, device, first

        def device_seconds(self):
            return self.device

    graphs = gr.LayerGraphs(list(parts.backbone_of(parts.unwrap(tiny_llama())).layers))
    host_bound, device_bound = (2048, 8), (8192, 8)  # (padded length, sequence slots, ...)
    assert graphs._eager_verdict(host_bound) == "timing the eager forward"
    graphs.timings[host_bound] = Timing(0.010, None, first=True)
    assert graphs._eager_verdict(host_bound) == "eager timing still on the device"
    graphs.timings[host_bound].device = 0.012
    assert graphs._eager_verdict(host_bound) == "timing the eager forward"  # the first timing is not trusted
    graphs.timings[host_bound] = Timing(0.010, 0.012)
    assert graphs._eager_verdict(host_bound) is None  # capture it
    assert graphs._eager_verdict((1024, 8)) is None  # shorter: captured untimed
    assert graphs._eager_verdict((4096, 8)) == "timing the eager forward"  # longer: timed
    graphs.timings[device_bound] = Timing(0.010, 0.050)
    verdict = graphs._eager_verdict(device_bound)
    assert verdict == gr.DEVICE_BOUND and graphs._eager_verdict(device_bound) == verdict
    assert graphs._eager_verdict((16384, 16)) == gr.DEVICE_BOUND  # longer: eager untimed
    # device time scales with the tokens: 5.0x at 8192 predicts 1.9x at 3072, 1.5 times the threshold: eager untimed
    assert graphs._eager_verdict((4096, 8)) == gr.DEVICE_BOUND and graphs._eager_verdict((3072, 8)) == gr.DEVICE_BOUND
    assert graphs._eager_verdict((2560, 8)) == "timing the eager forward"  # predicted 1.6x: too close, timed
    assert "1 padded length(s) left eager: the device was busy 5.0x the host's launch time" in graphs.summary()
    # strongly host-bound (0.3x at 2048): lengths up to 1.25 / (1.5 * 0.3) = 2.8x longer are captured untimed
    graphs = gr.LayerGraphs(list(parts.backbone_of(parts.unwrap(tiny_llama())).layers))
    graphs.timings[host_bound] = Timing(0.010, 0.003)
    assert graphs._eager_verdict(host_bound) is None
    assert graphs._eager_verdict((4096, 8)) is None and graphs._eager_verdict((5120, 8)) is None
    assert graphs._eager_verdict((6144, 8)) == "timing the eager forward"
    # a length first seen while another's timing is pending: the finished timing is read first, and decides it
    graphs = gr.LayerGraphs(list(parts.backbone_of(parts.unwrap(tiny_llama())).layers))
    graphs.timings[host_bound] = Timing(0.010, 0.003)
    assert graphs._eager_verdict((4096, 8)) is None and graphs.timings == {}
    assert "timed host-bound: 2048 tokens 0.30x" in graphs.summary()

    monkeypatch.setenv(fp.CUDA_GRAPHS_ENV, "always")
    assert fp.FastPath.for_device("cuda") == fp.FastPath(graphs_where_host_bound=False)
    monkeypatch.delenv(fp.CUDA_GRAPHS_ENV)
    assert fp.FastPath.for_device("cuda").graphs_where_host_bound


def _memory(budget_gib: float) -> memplan.MemoryModel:
    gib = 2**30
    return memplan.MemoryModel(
        layers=16,
        hidden=2048,
        vocab=32000,
        act_bytes=140_000,
        boundary_bytes=4096,
        fixed_bytes=3 * gib,
        budget_bytes=int(budget_gib * gib),
    )


def test_graph_length_limit_leaves_the_longest_micro_batch_room_checkpointed():
    longest = 7468
    for budget in (14.0, 16.26, 19.0, 30.0):
        memory = _memory(budget)
        limit = memplan.graph_length_limit(memory, longest)
        assert limit is not None, budget
        b, beside = limit
        assert memory.peak(b, 0) <= memory.budget_bytes  # a graphed micro-batch needs no checkpointing
        assert beside.fixed_bytes == memory.fixed_bytes + int(memory.activations(b, 0))  # the pool is reserved
        assert longest <= b or beside.peak(longest, memory.layers) <= memory.budget_bytes
        bigger = gr.bucket_tokens(b + 1)
        if bigger <= gr.bucket_tokens(longest):  # the next length up breaks one of the two conditions
            above = dataclasses.replace(memory, fixed_bytes=memory.fixed_bytes + int(memory.activations(bigger, 0)))
            assert (
                memory.peak(bigger, 0) > memory.budget_bytes or above.peak(longest, memory.layers) > memory.budget_bytes
            )
    assert memplan.graph_length_limit(_memory(30.0), longest)[0] == gr.bucket_tokens(longest)  # all graphed
    assert memplan.graph_length_limit(_memory(3.5), longest) is None  # not even the shortest length fits


def test_graphs_beside_per_micro_batch_checkpointing_and_blocked_otherwise():
    model = with_lora(tiny_llama()).train()
    session = fp.FastSession(fp.FastPath(checkpointing="auto", cuda_graphs=True), "cpu")
    session.patch_model(model)
    layers = parts.decoder_layers(parts.backbone_of(parts.unwrap(model)))
    try:
        session.device = torch.device("cuda")  # as if on a GPU: the next reasons are checked in order
        attn._KERNEL.name = "varlen"
        memory = _memory(16.26)
        plan = memplan.MemoryPlan(
            layers=16,
            checkpointed_layers=4,
            fold=1,
            tokens_per_micro_batch=7468,
            activation_bytes_per_token_layer=memory.act_bytes,
            budget_gib=16.26,
            estimated_peak_gib=15.9,
            fits=True,
            per_micro_batch=False,
            memory=memory,
        )
        assert session._graphs_blocked(model, plan) == "the memory plan checkpoints 4 layer(s) of every micro-batch"
        plan.per_micro_batch = True
        assert session._graphs_blocked(model, plan) is None
        graphs, wrapped, per_micro_batch = session._graph_plan(model, plan, layers)
        longest, beside = memplan.graph_length_limit(memory, 7468)
        assert graphs.max_bucket == longest and wrapped == beside.layers_to_checkpoint(7468) >= 4
        assert per_micro_batch(7468) == wrapped and per_micro_batch(1000) == beside.layers_to_checkpoint(1000)
        graphs.capturing = True
        assert per_micro_batch(longest) == 0  # what a graph captures is never checkpointed
        plan.checkpointed_layers = 0
        graphs, wrapped, per_micro_batch = session._graph_plan(model, plan, layers)
        assert graphs.max_bucket is None and wrapped == 0 and per_micro_batch is None
        parts.unwrap(model).config.model_type = "gemma3"
        assert session._graphs_blocked(model, plan).startswith("model type 'gemma3' is not one of")
    finally:
        attn._KERNEL.name = "per_sequence"
        parts.unwrap(model).config.model_type = "llama"
        session.device = torch.device("cpu")
        session.close()


@CUDA
def test_graphed_training_equals_eager_training_with_accumulation():
    """Loss and accumulated adapter gradients of graphed micro-batches (several buckets, two micro-batches per
    optimizer step) equal those of the eager fast path."""

    def train(graphs: bool):
        model = with_lora(tiny_llama(layers=3), dropout=0.0).to("cuda").train()
        params = [p for p in model.parameters() if p.requires_grad]
        session = fp.FastSession(
            fp.FastPath(checkpointing="none", cuda_graphs=graphs, graphs_where_host_bound=False), "cuda"
        )
        session.patch_model(model)
        losses, grads = [], []
        with session.training(model, None):
            for lengths in [(24, 17, 6), (200, 3), (24, 17, 6), (90, 90, 90, 90)]:
                ids, mask = (t.cuda() for t in padded_batch(lengths=lengths))
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
                loss.backward()
                losses.append(float(loss))
                if len(losses) % 2 == 0:
                    grads.append([p.grad.clone() for p in params])
                    model.zero_grad(set_to_none=False)
        session.close()
        return losses, grads, session.report.cuda_graphs

    eager_losses, eager_grads, _ = train(False)
    losses, grads, report = train(True)
    assert report.startswith("on:") and "replays" in report, report
    assert losses == pytest.approx(eager_losses, rel=2e-2)
    for step_eager, step in zip(eager_grads, grads, strict=True):
        for a, b in zip(step_eager, step, strict=True):
            torch.testing.assert_close(b, a, atol=2e-2, rtol=5e-2)


@CUDA
def test_timed_padded_lengths_train_as_eager_training_does():
    """With the eager forwards timed first (the default), a tiny model's host-bound padded length is captured
    after its timings and replays from then on, with the eager fast path's losses."""

    def train(graphs: bool):
        model = with_lora(tiny_llama(layers=3), dropout=0.0).to("cuda").train()
        session = fp.FastSession(fp.FastPath(checkpointing="none", cuda_graphs=graphs), "cuda")
        session.patch_model(model)
        losses = []
        with session.training(model, None):
            for _ in range(6):
                ids, mask = (t.cuda() for t in padded_batch(lengths=(24, 17, 6)))
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
                loss.backward()
                torch.cuda.synchronize()  # each timing is read back by the next micro-batch
                losses.append(float(loss))
        session.close()
        return losses, session.report.cuda_graphs

    eager, _ = train(False)
    losses, report = train(True)
    assert "timing the eager forward x2" in report and "1 bucket(s) captured" in report, report
    assert losses == pytest.approx(eager, rel=2e-2)


@CUDA
def test_a_layer_that_waits_for_the_gpu_is_refused_before_any_capture_and_training_goes_on():
    """An operation a capture cannot hold (a host sync) raises in the eager warm-up, so no capture is left half-done
    (which would leave the CUDA random generator unusable): training goes on eagerly, dropout included."""
    model = with_lora(tiny_llama(layers=2), dropout=0.1).to("cuda").train()
    mlp = parts.decoder_layers(parts.backbone_of(parts.unwrap(model)))[1].mlp
    original = mlp.forward

    def syncing(x):
        float(x.detach().float().abs().max())
        return original(x)

    mlp.forward = syncing
    # no Liger kernels (their SwiGLU would replace the syncing MLP forward), every padded length graphed
    session = fp.FastSession(fp.FastPath(checkpointing="none", liger=(), graphs_where_host_bound=False), "cuda")
    session.patch_model(model)
    losses = []
    with session.training(model, None):
        for lengths in [(24, 17, 6), (30, 9)]:
            ids, mask = (t.cuda() for t in padded_batch(lengths=lengths))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
            loss.backward()
            losses.append(float(loss))
    session.close()
    assert session.report.cuda_graphs.startswith("off: capture failed: RuntimeError: called a synchronizing")
    assert all(torch.isfinite(torch.tensor(losses)))
