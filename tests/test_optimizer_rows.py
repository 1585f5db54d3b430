"`RowAdam` moves the rows of wide CPU tables with numpy (issue 17): the numbers must be PyTorch's `index_select`/`index_copy_` path's to the bit"
import copy, pytest, torch
from fastai_cf.optimizer import RowAdam

class _TorchRows(RowAdam):
    "The step as it was before numpy moved the rows: PyTorch's gathers and write-backs throughout"
    def _sparse_step(self, p, st, m, v, t, lr, b1, b2, eps, l2, idx, gv, cnt):
        pr = p.index_select(0, idx)
        if l2: gv = gv.addcmul(pr, cnt, value=l2/p.grad._nnz())
        mr = m.index_select(0, idx).mul_(b1).add_(gv, alpha=1-b1)
        vr = v.index_select(0, idx).mul_(b2).addcmul_(gv, gv, value=1-b2)
        m.index_copy_(0, idx, mr); v.index_copy_(0, idx, vr)
        if 'decay' in st:
            pr.mul_((st['decay'] - st['decayed'].index_select(0, idx)).exp_().to(p.dtype)[:,None])
            st['decayed'].index_fill_(0, idx, st['decay'])
        p.index_copy_(0, idx, pr.add_(mr.div_(vr.div_(1-b2**t).sqrt_().add_(eps)), alpha=-lr/(1-b1**t)))

def _run(cls, n_cols, dtype, **kw):
    torch.manual_seed(0)
    embs = [torch.nn.Embedding(300, n_cols, sparse=True).to(dtype), torch.nn.Embedding(300, 1, sparse=True).to(dtype)]
    opt = cls([e.weight for e in embs], lr=0.05, **kw)
    for k in range(30):
        i = torch.randint(0, 300, (256,)) ** 2 // 300      # skewed: many rows looked up several times
        ((embs[0](i).sum(1) + embs[1](i)[:,0] - 1)**2).mean().backward()
        for g in opt.param_groups: g['lr'] = 0.05 * (1 - k/40)
        opt.step(); opt.zero_grad()
    opt.flush()
    return [e.weight.detach() for e in embs], [opt.state[e.weight] for e in embs]

def _same(a, b):
    (wa,sa),(wb,sb) = a,b
    assert all(torch.equal(x, y) for x,y in zip(wa, wb))
    for x,y in zip(sa, sb):
        assert x.keys() == y.keys()
        for k in x: assert (x[k] == y[k]) if k in ('step', 'decay') else torch.equal(x[k], y[k]), k

def test_numpy_rows_bit_identical():
    cases = [(16, torch.float32, dict()), (64, torch.float32, dict(weight_decay=0.3)),
             (50, torch.float32, dict(weight_decay=0.3, l2=0.05, decay_bias=True)), (64, torch.float64, dict(weight_decay=0.3))]
    for n_cols,dtype,kw in cases: _same(_run(RowAdam, n_cols, dtype, **kw), _run(_TorchRows, n_cols, dtype, **kw))

@pytest.mark.parametrize('fused', [False, True], ids=['numpy rows', 'compiled'])
def test_resume_wide_bit_identical(fused):
    "Stopped and resumed through `state_dict` (the numpy path, or the compiled step): the weights of the straight run, to the bit"
    torch.manual_seed(0)
    e1 = torch.nn.Embedding(200, 64, sparse=True); e2 = copy.deepcopy(e1)
    def fit(e, opt, ks):
        for k in ks:
            torch.manual_seed(k); e(torch.randint(0, 200, (128,))).pow(2).sum().backward(); opt.step(); opt.zero_grad()
    o1 = RowAdam(e1.parameters(), lr=0.05, weight_decay=0.7, fused=fused); fit(e1, o1, range(12))
    o2 = RowAdam(e2.parameters(), lr=0.05, weight_decay=0.7, fused=fused); fit(e2, o2, range(6))
    sd = copy.deepcopy(o2.state_dict())
    o2 = RowAdam(e2.parameters(), lr=0.05, weight_decay=0.7, fused=fused); o2.load_state_dict(sd); fit(e2, o2, range(6, 12))
    o1.flush(); o2.flush()
    assert torch.equal(e1.weight, e2.weight)

# The compiled step (`_adam_rows`, numba): what large tables get by default, forced here with `fused=True` on small ones
from functools import partial
import warnings
import fastai_cf.optimizer as O

def _close(a, b, tol=1e-5):
    (wa,sa),(wb,sb) = a,b
    for x,y in zip(wa, wb): torch.testing.assert_close(x, y, rtol=tol, atol=tol)
    for x,y in zip(sa, sb):
        assert x.keys() == y.keys()
        for k in x:
            if k in ('step', 'decay'): assert x[k] == y[k], k
            else: torch.testing.assert_close(x[k], y[k], rtol=tol, atol=tol, msg=k)

def test_fused_matches_torch_ops():
    "Weights, moments and the decay ledger of the compiled step: PyTorch's ops' to float32 rounding"
    for n_cols,kw in [(16, dict()), (64, dict(weight_decay=0.3)), (50, dict(weight_decay=0.3, l2=0.05, decay_bias=True))]:
        _close(_run(partial(RowAdam, fused=True), n_cols, torch.float32, **kw), _run(partial(RowAdam, fused=False), n_cols, torch.float32, **kw))

def test_fused_by_rows(monkeypatch):
    "Float32 CPU tables of CF_FUSED_ROWS rows or more are compiled by default; fused=False, float64 and a missing numba keep PyTorch's ops"
    big,small = torch.zeros(O.CF_FUSED_ROWS, 4),torch.zeros(O.CF_FUSED_ROWS - 1, 4)
    assert O._fused(big) and not O._fused(small) and O._fused(small, True)
    assert not O._fused(big, False) and not O._fused(big.double()) and not O._fused(big.t())
    monkeypatch.setattr(O, '_adam_rows', lambda: None)
    monkeypatch.setattr(O, '_warned', [])
    with pytest.warns(UserWarning, match=r"numba is not installed.*pip install 'fastai_cf\[fast\]'"): assert not O._fused(big)
    assert not O._fused(small, True) and not O._fused(small) and not O._fused(big, False)
    with warnings.catch_warnings():
        warnings.simplefilter('error'); assert not O._fused(big)    # said once per process
    _same(_run(partial(RowAdam, fused=True), 16, torch.float32, weight_decay=0.3), _run(partial(RowAdam, fused=False), 16, torch.float32, weight_decay=0.3))

def test_fused_bad_rows():
    "A sparse gradient naming rows the table lacks is refused before the compiled step (which does not check) writes anything"
    w = torch.nn.Parameter(torch.zeros(10, 4)); w0 = w.detach().clone()
    opt = RowAdam([w], lr=0.1, fused=True)
    w.grad = torch.sparse_coo_tensor(torch.tensor([[2, 10]]), torch.ones(2, 4), (10, 4), check_invariants=False)
    with pytest.raises(IndexError, match=r'rows 2\.\.10'): opt.step()
    assert torch.equal(w.detach(), w0)

def test_fused_batches_of_any_size():
    "Scratch kept from a larger batch serves a smaller one (a last partial batch, another fit's `bs`) without reading past it"
    def fit(fused):
        torch.manual_seed(0)
        e,b = torch.nn.Embedding(300, 8, sparse=True),torch.nn.Embedding(300, 1, sparse=True)
        opt = RowAdam([e.weight, b.weight], lr=0.05, weight_decay=0.2, fused=fused)
        for n in (512, 40, 300, 7, 512):
            i = torch.randint(0, 300, (n,)) ** 2 // 300
            (e(i).sum(1) + b(i)[:,0]).pow(2).mean().backward(); opt.step(); opt.zero_grad()
        opt.flush()
        return [e.weight.detach(), b.weight.detach()]
    for x,y in zip(fit(True), fit(False)): torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)

def test_fused_beside_torch_ops():
    "A large table on the compiled step and a small one on PyTorch's ops, in one optimizer: each as it would be alone"
    def fit(fused_rows):
        torch.manual_seed(0)
        big,small = torch.nn.Embedding(O.CF_FUSED_ROWS, 4, sparse=True),torch.nn.Embedding(50, 4, sparse=True)
        opt = RowAdam([big.weight, small.weight], lr=0.05, weight_decay=0.2, fused=fused_rows)
        for _ in range(4):
            (big(torch.randint(0, O.CF_FUSED_ROWS, (64,))).sum() + small(torch.randint(0, 50, (32,))).pow(2).sum()).backward(); opt.step(); opt.zero_grad()
        opt.flush()
        return big.weight.detach(),small.weight.detach()
    (b1,s1),(b0,s0) = fit(None),fit(False)
    assert torch.equal(s1, s0)     # the small table: PyTorch's ops either way
    torch.testing.assert_close(b1, b0, rtol=1e-5, atol=1e-5)
