"`RowAdam` moves the rows of wide CPU tables with numpy (issue 17): the numbers must be PyTorch's `index_select`/`index_copy_` path's to the bit"
import copy, torch
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

def test_resume_wide_bit_identical():
    "Stopped and resumed through `state_dict` (numpy path): the weights of the straight run"
    torch.manual_seed(0)
    e1 = torch.nn.Embedding(200, 64, sparse=True); e2 = copy.deepcopy(e1)
    def fit(e, opt, ks):
        for k in ks:
            torch.manual_seed(k); e(torch.randint(0, 200, (128,))).pow(2).sum().backward(); opt.step(); opt.zero_grad()
    o1 = RowAdam(e1.parameters(), lr=0.05, weight_decay=0.7); fit(e1, o1, range(12))
    o2 = RowAdam(e2.parameters(), lr=0.05, weight_decay=0.7); fit(e2, o2, range(6))
    sd = copy.deepcopy(o2.state_dict())
    o2 = RowAdam(e2.parameters(), lr=0.05, weight_decay=0.7); o2.load_state_dict(sd); fit(e2, o2, range(6, 12))
    o1.flush(); o2.flush()
    assert torch.equal(e1.weight, e2.weight)
