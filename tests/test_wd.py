"Weight-decay callbacks: logged norms against direct measurement, fastai's loggers, sparse models, sweeps"
import warnings
import numpy as np, pandas as pd, pytest, torch
from torch import nn
import matplotlib.pyplot as plt
from fastai.callback.core import Callback
from fastai.callback.progress import CSVLogger, ShowGraphCallback
from fastai.callback.schedule import ParamScheduler, SchedLin
from fastai.learner import load_learner
from fastai.optimizer import SGD
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders
from fastai_cf.models import DotProductBias
from fastai_cf.learner import cf_learner
from fastai_cf.callback.wd import *

@pytest.fixture(scope='module')
def dls():
    rng = np.random.default_rng(0)
    u,i = rng.normal(size=(60, 3)),rng.normal(size=(40, 3))
    cells = rng.choice(60*40, 1200, replace=False)
    uid,iid = cells//40, cells%40
    r = np.clip(np.round(2*(3 + (u[uid]*i[iid]).sum(1)/1.5 + rng.normal(0, .3, len(cells))))/2, .5, 5)
    return CFDataLoaders.from_df(pd.DataFrame({'user': uid, 'item': iid, 'rating': r}), seed=42, bs=64)

def quiet_fit(learn, epochs=2, lr=3e-2, **kwargs):
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr, **kwargs)
    return learn

def direct(model):
    "Norms of each `nn.Embedding`, measured independently of `weight_norms`"
    return {n: torch.linalg.norm(m.weight.data.double()).item() for n,m in model.named_modules() if isinstance(m, nn.Embedding)}

class Probe(Callback):
    "Measure norms directly at the moments the logger records (after it, before anything changes the weights)"
    order = 99
    def __init__(self, every): self.every,self.seen,self.losses = every,[],[]
    def after_batch(self):
        if self.training and self.learn.train_iter % self.every == 0: self.seen.append(direct(self.learn.model))
    def after_train(self): self.seen.append(direct(self.learn.model))

@pytest.mark.parametrize('model', ['dot_bias', 'nn'])
def test_logged_norms_equal_direct_norms(dls, model):
    set_seed(0, reproducible=True)
    log,probe = WeightDecayLogger(every=4),Probe(every=4)
    learn = quiet_fit(cf_learner(dls, model, n_factors=6, wd=0.1), cbs=[log, probe])
    h = log.history
    assert len(h) == len(probe.seen) == 2 + learn.train_iter//4
    names = list(probe.seen[0])
    assert names == (['u_weight', 'i_weight', 'u_bias', 'i_bias'] if model == 'dot_bias' else ['embeds.0', 'embeds.1'])
    for n in names: np.testing.assert_allclose(h[f'{n}_norm'], [o[n] for o in probe.seen], rtol=1e-5)
    end = direct(learn.model)   # the last row is the model as it is now
    for n in names: np.testing.assert_allclose(h[f'{n}_norm'].iloc[-1], end[n], rtol=1e-5)
    np.testing.assert_allclose(h.w_norm.iloc[-1], np.sqrt(sum(v**2 for v in end.values())), rtol=1e-5)
    if model == 'nn':
        other = [p for n,p in learn.model.named_parameters() if not n.startswith('embeds')]
        np.testing.assert_allclose(h.other_norm.iloc[-1], torch.sqrt(sum((p.data.double()**2).sum() for p in other)).item(), rtol=1e-5)

def test_batch_rows_use_the_loss_recorder_printed(dls):
    "A batch row's train_loss is the smoothed loss `Recorder` computed for that very batch"
    log = WeightDecayLogger(every=3)
    learn = quiet_fit(cf_learner(dls, n_factors=6), cbs=log)
    b = log.history.query("kind == 'batch'")
    np.testing.assert_allclose(b.train_loss, [learn.recorder.losses[i-1] for i in b.iter], rtol=1e-6)
    assert b.progress.is_monotonic_increasing and (np.diff(b.iter) == 3).all()

def test_recorder_csvlogger_showgraph(dls, tmp_path):
    log = WeightDecayLogger(show=('w_norm', 'gap', 'u_weight_rms'))
    learn = cf_learner(dls, n_factors=6, path=tmp_path, cbs=[log, CSVLogger(), ShowGraphCallback()])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(3, 3e-2)
    rec,h = learn.recorder,log.history
    assert rec.metric_names == ['epoch', 'train_loss', 'valid_loss', 'rmse', 'w_norm', 'gap', 'u_weight_rms', 'time']
    csv = learn.csv_logger.read_log()
    assert list(csv.columns) == rec.metric_names and len(csv) == 3
    np.testing.assert_allclose(csv.w_norm, h.w_norm, rtol=1e-5)
    np.testing.assert_allclose(csv.gap, h.gap, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(csv.valid_loss, h.valid_loss, rtol=1e-5)
    np.testing.assert_allclose([v[1] for v in rec.values], h.valid_loss, rtol=1e-6)   # ShowGraphCallback's column
    rec.plot_loss(); plt.close('all')
    # after the fit: metrics restored, validate/get_preds don't touch the history, a second fit starts afresh
    assert len(learn.validate()) == 2 and len(learn.metrics) == 1
    learn.get_preds(reorder=False)   # (the default reorder=True fails on CFDataLoaders, with or without this logger)
    assert len(log.history) == 3
    learn.fit_one_cycle(1, 3e-2)   # with its progress bar: ShowGraphCallback needs one
    assert len(log.history) == 1 and len(learn.metrics) == 1

def test_lr_find_with_logger_attached(dls, tmp_path):
    learn = cf_learner(dls, n_factors=6, path=tmp_path, cbs=WeightDecayLogger())
    with learn.no_bar(), learn.no_logging(): learn.lr_find(show_plot=False, num_it=20)
    assert learn.recorder.metric_names[-3:] == ['valid_loss', 'rmse', 'time'] and len(learn.metrics) == 1
    assert len(learn.weight_decay_logger.history) == 0

def test_best_epoch_is_argmin(dls):
    log = WeightDecayLogger()
    quiet_fit(cf_learner(dls, n_factors=16, wd=0), epochs=6, lr=1e-1, cbs=log)
    h = log.history
    assert log.best_epoch == int(np.argmin(h.valid_loss.values)) == h.epoch[h.valid_loss.idxmin()]
    assert WeightDecayLogger().best_epoch is None

def test_scheduled_wd_is_logged(dls):
    "`wd` is read from the optimizer, so a schedule shows up"
    log = WeightDecayLogger()
    learn = cf_learner(dls, n_factors=6)
    with learn.no_bar(), learn.no_logging(): learn.fit(3, 1e-2, cbs=[ParamScheduler({'wd': SchedLin(0., 0.3)}), log])
    wd = log.history.wd.values
    assert np.all(np.diff(wd) > 0) and 0.2 < wd[-1] <= 0.3
    h = log.history   # LazyAdam decays the factor tables, not the biases: the penalty counts those it decays
    np.testing.assert_allclose(h.penalty, wd*(h.u_weight_norm**2 + h.i_weight_norm**2))
    assert (h.penalty < wd*h.w_sq).all()

def test_sparse_embeddings(dls):
    "Norms come from `p.data`, so sparse-gradient embeddings are measured the same"
    model = DotProductBias.from_dls(dls, 6, sparse=True)
    log,probe = WeightDecayLogger(every=5),Probe(every=5)
    learn = quiet_fit(cf_learner(dls, model, opt_func=SGD, wd=0.01), cbs=[log, probe])
    assert all(m.sparse for m in model.modules() if isinstance(m, nn.Embedding))
    for n in probe.seen[0]: np.testing.assert_allclose(log.history[f'{n}_norm'], [o[n] for o in probe.seen], rtol=1e-5)

def test_l2_penalty_loss_and_wd(dls):
    learn = cf_learner(dls, n_factors=6, wd=0.3, cbs=[L2Penalty(0.2), WeightDecayLogger()])
    assert decay_mode(learn).startswith('L2 penalty in the loss')
    quiet_fit(learn, 2)
    h = learn.weight_decay_logger.history
    assert (h.wd == 0).all() and (h.l2 == 0.2).all()   # the optimizer's wd was off during the fit...
    assert learn.opt.hypers[0]['wd'] == 0.3            # ...and is back after it
    # validation loss is the plain MSE, the penalty only enters the training loss
    preds,targs = learn.get_preds(reorder=False)
    np.testing.assert_allclose(learn.validate()[0], ((preds - targs.view(-1))**2).mean().item(), rtol=1e-4)

def test_export_with_callbacks(dls, tmp_path):
    learn = cf_learner(dls, n_factors=6, path=tmp_path, cbs=[WeightDecayLogger(every=2), L2Penalty(0.1)])
    quiet_fit(learn, 1)
    learn.export(tmp_path/'m.pkl')
    learn2 = load_learner(tmp_path/'m.pkl')
    assert len(learn2.weight_decay_logger.history) == len(learn.weight_decay_logger.history)

class Count(Callback):
    def __init__(self): self.n = 0
    def after_batch(self): self.n += 1

def test_wd_sweep_same_init_and_passthrough(dls):
    cnt = Count()
    res = wd_sweep(dls, wds=(0.1, 0.1), epochs=2, lr=3e-2, n_factors=6, show_progress=False, opt_func=SGD, cbs=cnt)
    a,b = res.drop(columns='fit_seconds').to_dict('records')
    assert a == b                                      # same init, same batches
    assert cnt.n > 0                                   # cbs went to cf_learner
    assert list(res.attrs['curves'][0.1]['valid_loss']) == list(res.attrs['curves'][0.1]['valid_loss'])
    model = DotProductBias.from_dls(dls, 6)
    before = {k: v.clone() for k,v in model.state_dict().items()}
    res = wd_sweep(dls, wds=(0, 1.0), epochs=2, lr=3e-2, model=model, show_progress=False)
    assert all(torch.equal(before[k], v) for k,v in model.state_dict().items())   # the module is copied, not trained
    assert res.u_weight_norm[1] < res.u_weight_norm[0]
    res = wd_sweep(dls, wds=(0.1,), epochs=1, lr=3e-2, n_factors=6, mode='l2', show_progress=False)
    assert len(res) == 1 and res.attrs['mode'] == 'l2'

def test_plots(dls, tmp_path):
    log = WeightDecayLogger()
    with pytest.raises(ValueError, match='nothing recorded'): log.plot()
    quiet_fit(cf_learner(dls, n_factors=6), cbs=log)
    fig = log.plot(fname=tmp_path/'wd.png')
    assert isinstance(fig, plt.Figure) and (tmp_path/'wd.png').stat().st_size > 1000
    res = wd_sweep(dls, wds=(0, 0.1), epochs=1, lr=3e-2, n_factors=6, show_progress=False)
    fig = plot_wd_sweep(res, fname=tmp_path/'sweep.png')
    assert isinstance(fig, plt.Figure) and (tmp_path/'sweep.png').stat().st_size > 1000
    plot_wd_sweep(pd.DataFrame(res.to_dict('list')))   # attrs lost (e.g. read back from CSV): left panel only
    plt.close('all')
