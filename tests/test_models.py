"""Every model keeps the interface the trainer relies on: finite losses with a gradient for
every parameter, scores over all items, honest parameter counts, causal models that never look
ahead and that ignore left padding, BERT4Rec's [mask] handling, xLSTM's kernel choice and
sequence-length padding (the Mamba models' own parts: test_mamba_models.py)."""
from types import SimpleNamespace

import pytest
import torch

from recsys_core.data import LeaveOneOut, load_dataset
from recsys_core.models import MODEL_NAMES, build_model
from recsys_core.train.batches import training_batch

N_ITEMS = 30
TRAINED = [m for m in MODEL_NAMES if m != "pop"]
CAUSAL = ["sasrec", "gru4rec", "lstm", "xlstm", "mamba4rec", "sasmamba"]
MAMBA = ["mamba4rec", "sasmamba"]


def config(**overrides) -> SimpleNamespace:
    shape = dict(embedding_dim=16, num_heads=2, num_blocks=2, dropout=0.1, max_len=12,
                 mask_prob=0.3, loss="ce", num_negatives=8, negatives_per="batch")
    return SimpleNamespace(**{**shape, **overrides})


def make(name: str, **overrides):
    torch.manual_seed(0)
    return build_model(name, N_ITEMS, config(**overrides))


def left_padded(lengths: list[int], width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = [torch.cat([torch.zeros(width - n, dtype=torch.long),
                       torch.randint(1, N_ITEMS + 1, (n,), generator=g)]) for n in lengths]
    return torch.stack(rows)


@pytest.fixture(scope="module")
def split() -> LeaveOneOut:
    data = load_dataset("synthetic", synthetic={"n_users": 40, "n_items": N_ITEMS, "seed": 3})
    return LeaveOneOut.from_data(data)


@pytest.mark.parametrize("loss", ["ce", "sampled", "sampled-per-position"])
@pytest.mark.parametrize("name", TRAINED)
def test_training_step_gives_finite_loss_and_a_gradient_to_every_parameter(name, loss, split):
    per = "position" if loss.endswith("per-position") else "batch"
    cfg = config(loss=loss.removesuffix("-per-position"), negatives_per=per)
    model = make(name)
    model.train()
    starts, ends = split.train_windows(cfg.max_len)
    inputs, targets, negatives = training_batch(cfg, model, split, starts[:16], ends[:16])
    assert (targets != 0).any()
    out = model(inputs, targets, negatives)
    assert out.ndim == 0 and torch.isfinite(out)
    out.backward()
    # DDP runs with find_unused_parameters=False: a parameter without a gradient breaks it.
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_sampled_softmax_per_position_is_each_rows_softmax_over_its_own_negatives(name, split):
    """The per-position negatives (RecTools' sampler) go with their rows whether the step keeps
    the positions with a target (eager) or a fixed number of rows (`capacity`, the CUDA graph);
    a negative equal to the row's target is left out (30 items: collisions in most rows)."""
    cfg = config(loss="sampled", negatives_per="position")
    model = make(name)
    model.eval()
    starts, ends = split.train_windows(cfg.max_len)
    inputs, targets, negatives = training_batch(cfg, model, split, starts[:16], ends[:16])
    assert negatives.shape == (*inputs.shape, cfg.num_negatives)
    negatives[..., 0] = targets          # a collision in every row
    targets[:, :4] = 0                   # positions without a target, as padding has
    with torch.no_grad():
        hidden = model.encode(inputs)
        eager = model.loss(hidden, targets, negatives)
        graph = model.loss(hidden, targets, negatives, capacity=int((targets != 0).sum()) + 5)
        expected = []
        for b, pos in (targets != 0).nonzero().tolist():
            h, t, neg = hidden[b, pos], targets[b, pos], negatives[b, pos]
            neg = neg[neg != t]
            score = lambda ids: model.item_emb(ids) @ h + model.output_bias(ids)
            logits = torch.cat([score(t[None]), score(neg)])
            expected.append(-torch.log_softmax(logits, 0)[0])
    assert torch.allclose(eager, torch.stack(expected).mean(), rtol=1e-5)
    assert torch.allclose(graph, eager, rtol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_score_next_scores_every_id(name):
    model = make(name)
    model.eval()
    history = left_padded([1, 5, 12], 12)
    with torch.no_grad():
        scores = model.score_next(history)
    assert scores.shape == (3, N_ITEMS + 1)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_param_counts_add_up(name):
    model = make(name)
    counts = model.param_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    if name != "pop":
        assert counts["embedding"] > 0 and counts["backbone"] > 0


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_models_never_look_ahead(name):
    model = make(name, dropout=0.0)
    model.eval()
    x = left_padded([10, 12], 12)
    y = x.clone()
    y[:, 7] = y[:, 7] % N_ITEMS + 1          # another item at position 7 only
    with torch.no_grad():
        hx, hy = model.encode(x), model.encode(y)
    assert torch.allclose(hx[:, :7], hy[:, :7], atol=1e-5)
    assert not torch.allclose(hx[:, 7:], hy[:, 7:], atol=1e-5)


@pytest.mark.parametrize("name", CAUSAL)
def test_left_padding_does_not_change_the_outputs(name):
    """The output at every item is the same under 3 and 6 columns of left padding. The
    LayerNorms' biases are moved off zero first, so that padding reaches the layers after a
    norm as a non-zero input (an untrained Mamba4Rec would otherwise pass unrotated, nearly)."""
    model = make(name, dropout=0.0)
    model.eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n and n.endswith("bias"):
                p.add_(0.5 * torch.randn_like(p))
    short = left_padded([3, 6, 9], 9)
    long = torch.cat([torch.zeros(3, 3, dtype=torch.long), short], 1)
    with torch.no_grad():
        a, b = model.encode(short), model.encode(long)[:, 3:]
    items = (short != 0).unsqueeze(-1)
    assert torch.allclose(a * items, b * items, atol=1e-5)


def test_bert4rec_masks_the_slot_after_the_history():
    model = make("bert4rec")
    assert model.objective == "masked" and model.mask_token == N_ITEMS + 1
    assert model.item_emb.num_embeddings == N_ITEMS + 2
    history = left_padded([2, 12], 12)
    x = model.eval_input(history)
    assert x.shape == history.shape
    assert torch.equal(x[:, -1], torch.full((2,), N_ITEMS + 1))
    assert torch.equal(x[:, :-1], history[:, 1:])
    hidden = model.encode(x)
    assert model.logits(hidden).shape == (2, 12, N_ITEMS + 1)   # no [mask] column


@pytest.mark.parametrize("train", [True, False])
def test_bert4rec_all_padding_row_stays_finite(train):
    model = make("bert4rec")
    model.train(train)
    x = left_padded([0, 4], 12)
    with torch.set_grad_enabled(train):
        assert torch.isfinite(model.encode(x)).all()


def test_xlstm_picks_native_kernels_on_cpu():
    model = make("xlstm")
    assert model.config.chunkwise_kernel == "chunkwise--native_autograd"
    assert model.config.sequence_kernel == "native_sequence__native"
    assert model.config.step_kernel == "native"
    assert model.chunk_size == 12            # min(64, max_len): one chunk, no padding


def test_xlstm_kernel_lengths():
    from recsys_core.models.xlstm import KERNELS, kernel_length
    assert KERNELS["cuda"]["chunkwise_kernel"] == "chunkwise--triton_xl_chunk"
    # Triton: 16, 32 or 64 below 128, then multiples of the chunk size (64).
    assert [kernel_length(n, 64, True) for n in (1, 16, 17, 50, 64, 65, 128, 129, 200)] == \
        [16, 16, 32, 64, 64, 128, 128, 192, 256]
    assert [kernel_length(n, 20, False) for n in (1, 20, 21, 50)] == [20, 20, 40, 60]


@pytest.mark.parametrize("dim, heads, error",
                         [(32, 2, "head dim >= 16"), (64, 1, "num_heads >= 2"),
                          (256, 2, "value head dim <= 64.*num_heads >= 4")])
def test_xlstm_refuses_shapes_the_triton_kernels_get_wrong(dim, heads, error):
    cfg = config(embedding_dim=dim, num_heads=heads)
    with pytest.raises(ValueError, match=error):
        build_model("xlstm", N_ITEMS, cfg, device_type="cuda")


def test_the_launchers_shape_check_uses_the_models_head_dims():
    """launcher/grid.py checks shapes without building the model: its factors are XLSTMRec's."""
    from recsys_core.models.xlstm_shapes import QK_DIM_FACTOR, V_DIM_FACTOR
    model = build_model("xlstm", N_ITEMS, config(embedding_dim=64, num_heads=2))
    assert (model.config.qk_dim_factor, model.config.v_dim_factor) == (QK_DIM_FACTOR, V_DIM_FACTOR)


def test_xlstm_on_cuda_takes_the_study_shapes():
    """Construction runs the shape checks only (no CUDA call): the study's xLSTM shapes pass."""
    for dim, heads in [(64, 2), (128, 2), (256, 4), (512, 8)]:
        build_model("xlstm", N_ITEMS, config(embedding_dim=dim, num_heads=heads),
                    device_type="cuda")


def test_xlstm_splits_a_batch_the_triton_kernels_cannot_launch_at_once():
    """The kernels launch chunks × batch × heads programs on CUDA's grid z (at most 65,535):
    at L 1024, 2 heads, the study's 2,048 users to evaluate were one too many. Above the
    limit `encode` runs the batch in parts, the same outputs (CPU twin: a limit of 2 rows)."""
    from recsys_core.models.xlstm import GRID_Z
    cuda = build_model("xlstm", N_ITEMS, config(embedding_dim=64, num_heads=2, max_len=1024),
                       device_type="cuda")
    assert GRID_Z == 65_535 and cuda.batch_rows(1024) == 2047 < 2048
    assert (cuda.batch_rows(200), cuda.batch_rows(50)) == (8191, 32767)   # 4 chunks; 1 of 64
    assert make("xlstm").batch_rows(12) is None                           # CPU kernels
    model = make("xlstm", dropout=0.0)
    model.eval()
    x = left_padded([12, 3, 7, 1, 9], 12)
    with torch.no_grad():
        whole, last = model.encode(x), model.encode(x, last_only=True)
        model.batch_rows = lambda length: 2
        assert torch.allclose(model.encode(x), whole, atol=1e-6)
        assert torch.allclose(model.encode(x, last_only=True), last, atol=1e-6)
        assert model.score_next(x).shape == (5, N_ITEMS + 1)


def test_xlstm_leaves_its_mlstm_kernels_out_of_the_compiled_encoder():
    """compile_encoder: traced, the kernels' autograd Function put CPU scalar tensors in the
    graph, whose CPU kernels cost a GPU process 23 s of Inductor's CPU checks. After
    `leave_out_of_compile` no compiled graph holds a node of the mLSTM backend, and the
    compiled encoder gives the module's outputs."""
    model = make("xlstm", dropout=0.0)
    x = left_padded([12, 3, 7], 12)
    expected = model.encode(x)

    def backend_nodes(model) -> int:
        graphs = []

        def record(gm, example_inputs):
            graphs.append(gm)
            return gm.forward
        torch._dynamo.reset()
        out = torch.compile(model.encode, backend=record, dynamic=False)(x)
        torch.testing.assert_close(out, expected)
        assert graphs
        return sum("mlstm_backend" in str(node.meta.get("nn_module_stack", ""))
                   for gm in graphs for node in gm.graph.nodes)

    assert backend_nodes(model) > 0          # traced into the backend without the mark
    model.leave_out_of_compile()
    assert backend_nodes(model) == 0
    torch._dynamo.reset()


@pytest.mark.parametrize("length", [5, 12, 29])
def test_xlstm_takes_lengths_that_are_not_multiples_of_the_chunk(length):
    model = make("xlstm", dropout=0.0)
    model.eval()
    x = left_padded([length, 3], length)
    with torch.no_grad():
        hidden = model.encode(x)
        padded = model.encode(torch.cat([torch.zeros(2, 12, dtype=torch.long), x], 1))
    assert hidden.shape == (2, length, 16)
    assert torch.allclose(hidden, padded[:, 12:], atol=1e-5)


def test_init_std_and_ffn_factor_reach_the_model_and_keep_old_hashes():
    from recsys_core.train import TrainConfig
    from recsys_core.train.config import ConfigError
    base = TrainConfig(model="sasrec", embedding_dim=32)
    torch.manual_seed(0)
    default = build_model("sasrec", 2000, base)
    assert abs(float(default.item_emb.weight[1:].std()) - 32 ** -0.5) < 0.01
    torch.manual_seed(0)
    small = build_model("sasrec", 2000, TrainConfig(model="sasrec", embedding_dim=32,
                                                    init_std=0.02, ffn_factor=1))
    assert abs(float(small.item_emb.weight[1:].std()) - 0.02) < 0.002
    assert float(small.item_emb.weight[0].abs().sum()) == 0            # padding stays zero
    assert small.blocks.layers[0].linear1.out_features == 32
    assert default.blocks.layers[0].linear1.out_features == 128
    # the defaults leave a configuration's identity (resume, result hashes) as it was
    assert base.hash() == TrainConfig(model="sasrec", embedding_dim=32, init_std=0.0,
                                      ffn_factor=4).hash()
    assert base.hash() != TrainConfig(model="sasrec", embedding_dim=32, init_std=0.02).hash()
    with pytest.raises(ConfigError, match="init_std"):
        TrainConfig(init_std=-1.0)
    with pytest.raises(ConfigError, match="ffn_factor"):
        TrainConfig(ffn_factor=0)


@pytest.mark.parametrize("name", ["sasrec", "xlstm"])
def test_last_position_alone_is_scored_as_the_full_encoder_scores_it(name):
    """Evaluation runs the last block's position-wise parts for the last position only."""
    from recsys_core.train import TrainConfig
    torch.manual_seed(0)
    for blocks in (1, 2):
        model = build_model(name, 300, TrainConfig(model=name, embedding_dim=32,
                                                   num_blocks=blocks, max_len=20)).eval()
        history = torch.randint(1, 301, (16, 20))
        history[:5, :7] = 0                               # left padding
        with torch.no_grad():
            full = model.logits(model.encode(history)[:, -1])
            fast = model.score_next(history)
        torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4)


SASREC_VARIANTS = [dict(sasrec_block=b, positions=p) for b in ("pre_ln", "original")
                   for p in ("from_end", "from_start")]


@pytest.mark.parametrize("variant", SASREC_VARIANTS, ids=lambda v: "-".join(v.values()))
def test_sasrec_blocks_and_positions_keep_the_model_contract(variant):
    """Every SASRec variant never looks ahead, ignores left padding, scores the last position
    alone as the full encoder does, and gives every parameter a gradient."""
    model = make("sasrec", dropout=0.0, **variant).eval()
    x = left_padded([10, 12], 12)
    y = x.clone()
    y[:, 7] = y[:, 7] % N_ITEMS + 1
    short = left_padded([3, 6, 9], 9)
    long = torch.cat([torch.zeros(3, 3, dtype=torch.long), short], 1)
    with torch.no_grad():
        hx, hy = model.encode(x), model.encode(y)
        assert torch.allclose(hx[:, :7], hy[:, :7], atol=1e-5)
        assert not torch.allclose(hx[:, 7:], hy[:, 7:], atol=1e-5)
        assert torch.allclose(model.encode(short)[:, -1], model.encode(long)[:, -1], atol=1e-5)
        torch.testing.assert_close(model.score_next(long),
                                   model.logits(model.encode(long)[:, -1]), rtol=1e-4, atol=1e-4)
    model.train()
    targets = torch.where(x != 0, torch.randint(1, N_ITEMS + 1, x.shape), torch.zeros_like(x))
    model(x, targets).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_original_sasrec_block_is_the_papers_block():
    """q = LN(x); x' = q + attention(q, x, x); h = LN(x'); out = h + FFN(h) with a ReLU
    feed-forward of width ffn_factor·D, every linear layer and the positions ~ N(0, 0.02²)."""
    from recsys_core.models.sasrec import OriginalBlock
    torch.manual_seed(0)
    model = build_model("sasrec", 2000, config(embedding_dim=64, num_heads=1, dropout=0.0,
                                               sasrec_block="original", ffn_factor=1)).eval()
    block = model.blocks[0]
    assert isinstance(block, OriginalBlock) and block.ffn[0].out_features == 64
    for w in (block.ffn[0].weight, block.attn.out_proj.weight, model.pos_emb.weight):
        assert abs(float(w.std()) - 0.02) < 0.004
    x = torch.randn(3, 12, 64)
    mask = torch.triu(torch.full((12, 12), float("-inf")), 1)
    q = torch.nn.functional.layer_norm(x, (64,), block.attn_norm.weight, block.attn_norm.bias, 1e-8)
    att = block.attn(q, x, x, attn_mask=mask, need_weights=False)[0]
    h = torch.nn.functional.layer_norm(q + att, (64,), block.ffn_norm.weight, block.ffn_norm.bias, 1e-8)
    ffn = block.ffn[3](torch.relu(block.ffn[0](h)))
    with torch.no_grad():
        torch.testing.assert_close(block(x, mask), h + ffn)


def test_positions_from_start_number_each_rows_items_from_zero():
    from recsys_core.models.base import position_ids
    ids = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4], [0, 0, 0, 9]])
    assert position_ids(ids, 10, "from_start").tolist() == [[0, 0, 0, 1], [0, 1, 2, 3],
                                                           [0, 0, 0, 0]]
    assert position_ids(ids, 10, "from_end").tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="from_end, from_start"):
        position_ids(ids, 10, "middle")


def test_new_options_keep_old_hashes_and_are_checked():
    from recsys_core.train import TrainConfig
    from recsys_core.train.config import ConfigError
    base = TrainConfig(model="sasrec")
    # the default configuration's identity since before the options below existed
    assert base.hash() == "fc1fef2262122d0e"
    assert base.hash() == TrainConfig(model="sasrec", positions="from_end", sasrec_block="pre_ln",
                                      monitor="auto", d_state=32, d_conv=4, expand=2).hash()
    for changed in (dict(positions="from_start"), dict(sasrec_block="original"),
                    dict(monitor="val_ndcg@10"), dict(d_state=16), dict(d_conv=2),
                    dict(expand=1)):
        assert TrainConfig(model="sasrec", **changed).hash() != base.hash()
    for name in ("d_state", "d_conv", "expand"):
        with pytest.raises(ConfigError, match=f"{name} must be >= 1"):
            TrainConfig(**{name: 0})
    assert base.monitored == "val_recall@10"
    assert TrainConfig(ks=[5], monitor="auto").monitored == "val_recall@5"
    for bad, match in ((dict(monitor="val_ndcg@50"), "val_ndcg@10"),
                       (dict(monitor="test_recall@10"), "val_recall@5"),
                       (dict(sasrec_block="post"), "pre_ln, original"),
                       (dict(positions="left"), "from_end, from_start")):
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad)


@pytest.mark.parametrize("name", TRAINED)
def test_a_fixed_number_of_scored_rows_gives_the_same_loss_and_gradients(name, split):
    """The CUDA-graph step scores a fixed number of rows (targets first, then padding rows);
    loss and gradients are those of scoring exactly the positions with a target, and those of
    scoring every position."""
    cfg = config(dropout=0.0)
    starts, ends = split.train_windows(cfg.max_len)
    shortest = (ends - starts).argsort()[:8]          # windows with padding
    starts, ends = starts[shortest], ends[shortest]
    results = []
    for extra in (None, 5, 10_000):
        model = make(name, dropout=0.0)
        model.eval()      # no dropout; the RNNs' cuDNN path is not taken on the CPU
        torch.manual_seed(1)
        inputs, targets, _ = training_batch(cfg, model, split, starts, ends)
        n = int((targets != 0).sum())
        assert n + 5 < targets.numel()
        loss = model(inputs, targets, None, capacity=None if extra is None else n + extra)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (l0, g0), *others = results
    for l1, g1 in others:
        torch.testing.assert_close(l1, l0)
        for a, b in zip(g0, g1):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["gru4rec", "lstm"])
def test_rnn_dropout_by_torch_is_the_multi_layer_rnn_on_the_cpu(name):
    """rnn_dropout=torch (one-layer RNNs, torch's dropout between them; what a GPU resume
    repeats bitwise) against cuDNN's multi-layer RNN: on the CPU the same parameters, hidden
    states and gradients, bit for bit, in training mode (dropout drawn) and in eval."""
    def step(rnn_dropout, train):
        model = make(name, num_blocks=3, dropout=0.3, rnn_dropout=rnn_dropout)
        model.train(train)
        torch.manual_seed(1)
        hidden = model.encode(left_padded([12, 7, 3, 9], 12))
        hidden.square().sum().backward()
        return model, hidden, [p.grad for p in model.parameters()]
    for train in (True, False):
        (fused, h1, g1), (stacked, h2, g2) = step("cudnn", train), step("torch", train)
        assert type(stacked.rnn).__name__ == "StackedRNN" and len(g1) == len(g2)
        assert all(torch.equal(a, b) for a, b in zip(fused.parameters(), stacked.parameters()))
        assert torch.equal(h1, h2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    # one layer, or no dropout: nothing to drop between layers, the fused RNN stays
    for shape in (dict(num_blocks=1), dict(dropout=0.0)):
        assert isinstance(make(name, rnn_dropout="torch", **shape).rnn, torch.nn.RNNBase)


def test_the_transformers_leave_cudnn_attention_out_on_cuda_unless_told(monkeypatch):
    """models/attention_kernels.py: on CUDA a model with attention turns torch's cuDNN
    attention off (`efficient`), or keeps torch's choice (`torch`); a model without attention,
    or the CPU, sets nothing; a wrong value is refused, naming the valid ones."""
    from recsys_core.models.attention_kernels import KERNELS_ENV, choose_attention_kernels
    from recsys_core.train import TrainConfig
    before = torch.backends.cuda.cudnn_sdp_enabled()
    sasrec, gru = build_model("sasrec", 30, TrainConfig(embedding_dim=16)), \
        build_model("gru4rec", 30, TrainConfig(model="gru4rec", embedding_dim=16))
    try:
        monkeypatch.delenv(KERNELS_ENV, raising=False)
        assert choose_attention_kernels(sasrec, "cpu") is None
        assert choose_attention_kernels(gru, "cuda") is None
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
        assert choose_attention_kernels(sasrec, "cuda") == "efficient"
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setenv(KERNELS_ENV, "torch")
        assert choose_attention_kernels(build_model("bert4rec", 30, TrainConfig(
            model="bert4rec", embedding_dim=16)), "cuda") == "torch"
        assert torch.backends.cuda.cudnn_sdp_enabled()
        monkeypatch.setenv(KERNELS_ENV, "cudnn")
        with pytest.raises(ValueError, match="RECSYS_ATTENTION_KERNELS='cudnn'; valid: "
                                             "efficient, torch"):
            choose_attention_kernels(sasrec, "cuda")
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def copies_and_output(run) -> tuple[int, object]:
    """How many copies (clone, _to_copy, copy_) `run()` dispatches, forward and backward."""
    from benchmarks.sasrec_encoder import COPIES, Dispatched
    with Dispatched() as seen:
        out = run()
    return sum(seen.counts[c] for c in COPIES), out


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("self_attention", [False, True])
def test_batch_first_attention_is_the_modules_attention_with_fewer_copies(heads, self_attention):
    """models/batch_first_attention.py: `attend` on nn.MultiheadAttention's own weights gives
    the module's output bit for bit on the CPU, in training too (dropout: the same draws),
    for SASRec's normalised query and for self-attention (SASMamba), and for the last query
    alone; the gradients to float32's rounding; fewer copies. `attention_bias` is the module's mask, one for
    every head, in the attention's dtype, its rows 8-aligned."""
    from recsys_core.models.batch_first_attention import attend, attention_bias
    from recsys_core.models.sasrec import SASRec
    torch.manual_seed(0)
    model = SASRec(50, 16, num_heads=heads, num_blocks=1, dropout=0.3, max_len=12,
                   sasrec_block="original")
    mha = model.blocks[0].attn.train()
    ids = torch.randint(1, 51, (6, 12))
    ids[:3, :5] = 0
    ids[4, :11] = 0
    mask = model.attention_mask(ids)                      # [B·heads, L, L] for the module
    bias = attention_bias(model.causal_mask, ids, torch.float32)
    assert bias.shape == (6, 1, 12, 12) and bias.stride(-2) == 16
    allowed = [[[j <= i and (ids[b, j] != 0 or j == i) for j in range(12)] for i in range(12)]
               for b in range(6)]                     # causal, blind to padding, self always
    expected = torch.where(torch.tensor(allowed), 0.0, float("-inf"))
    assert torch.equal(bias[:, 0], expected)
    assert torch.equal(mask, expected.repeat_interleave(heads, 0))
    x = torch.randn(6, 12, 16)
    q = x if self_attention else torch.randn(6, 12, 16)

    def run(fn):
        inputs = [t.clone().requires_grad_() for t in (q, x)]
        query, key_value = (inputs[1], inputs[1]) if self_attention else inputs
        torch.manual_seed(1)
        out = fn(query, key_value)
        out.square().sum().backward()
        grads = [t.grad for t in inputs] + [p.grad for p in mha.parameters()]
        mha.zero_grad(set_to_none=True)
        return out.detach(), grads

    module_copies, (expected, expected_grads) = copies_and_output(lambda: run(
        lambda query, kv: mha(query, kv, kv, attn_mask=mask, need_weights=False)[0]))
    copies, (out, grads) = copies_and_output(lambda: run(
        lambda query, kv: attend(mha, query, kv, bias)))
    assert torch.equal(out, expected)
    for g, e in zip(grads, expected_grads):
        if e is not None:
            torch.testing.assert_close(g, e)    # the weights' sums in another order
    assert copies < module_copies
    mha.eval()
    with torch.no_grad():
        last = mha(x[:, -1:], x, x, attn_mask=mask[:, -1:], need_weights=False)[0]
        assert torch.equal(attend(mha, x[:, -1:], x, bias[:, :, -1:]), last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.attention_bias(ids, x).dtype == torch.bfloat16
    assert model.attention_bias(ids, x).dtype == torch.float32


@pytest.mark.parametrize("origin", ["from_start", "from_end"])
def test_position_embeddings_are_the_tables_rows_without_the_embeddings_backward(origin):
    """models/base.py:position_embeddings: the rows table(position_ids(...)) gives, also under
    bf16 autocast (fp32, exact); where the table trains, its gradient is the embedding's
    without nn.Embedding's backward (on CUDA a sort and a dozen kernels); where nothing
    trains, a lookup (no one-hot matrix for an evaluation's thousands of rows)."""
    from benchmarks.sasrec_encoder import Dispatched
    from recsys_core.models.base import position_embeddings, position_ids

    torch.manual_seed(0)
    table = torch.nn.Embedding(12, 8)
    ids = torch.randint(1, 30, (5, 10))
    ids[:2, :4] = 0
    ids[3, :9] = 0
    expected = table(position_ids(ids, 12, origin))
    grad = torch.randn(5, 10, 8)
    expected.expand(5, 10, 8).backward(grad)
    expected_grad, table.weight.grad = table.weight.grad, None
    with Dispatched() as ops:
        with torch.autocast("cpu", dtype=torch.bfloat16):     # the backward outside, as trained
            rows = position_embeddings(table, ids, origin)
        rows.expand(5, 10, 8).backward(grad)
    assert rows.dtype == torch.float32 and torch.equal(rows, expected.detach())
    torch.testing.assert_close(table.weight.grad, expected_grad)
    assert "embedding_dense_backward" not in ops.counts
    with Dispatched() as ops, torch.no_grad():
        assert torch.equal(position_embeddings(table, ids, origin), expected.detach())
    assert "embedding" in ops.counts and "mm" not in ops.counts
    if origin == "from_start":    # a one-hot matrix past its cap: a lookup again
        with Dispatched() as ops, pytest.MonkeyPatch.context() as patch:
            patch.setattr("recsys_core.models.base.ONE_HOT_MAX", 5 * 10 * 12 - 1)
            assert torch.equal(position_embeddings(table, ids, origin), expected.detach())
        assert "embedding" in ops.counts and "mm" not in ops.counts
