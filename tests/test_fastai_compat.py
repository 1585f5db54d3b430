"fastai's own collab workflow, run unchanged on `CFDataLoaders` and `cf_learner`: same answers as on `CollabDataLoaders`"
import warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.collab import CollabDataLoaders, collab_learner, EmbeddingDotBias
from fastai.tabular.model import get_emb_sz
from fastai.learner import load_learner
from fastai.interpret import Interpretation
from fastai.callback.tracker import SaveModelCallback, EarlyStoppingCallback
from fastai.callback.progress import CSVLogger
from fastai.callback.schedule import *
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders, load_movielens
from fastai_cf.learner import cf_learner

@pytest.fixture(scope='module')
def ratings():
    "A seeded 20k-row slice of the bundled ml-latest-small, titles merged (as the lesson)"
    return load_movielens().sample(20_000, random_state=0).reset_index(drop=True)

def _pair(df, **kw):
    "Stock and our loaders on the same arguments, each built after the same `set_seed`"
    set_seed(42, reproducible=True); s = CollabDataLoaders.from_df(df, seed=42, device='cpu', **kw)
    set_seed(42, reproducible=True); o = CFDataLoaders.from_df(df, seed=42, device='cpu', **kw)
    return s,o

def _ids(col):
    return {'int64': col.astype('int64'), 'int32': col.astype('int32'), 'str': col.astype(str),
            'object': col.astype(str).astype(object), 'category': col.astype(str).astype('category')}

@pytest.mark.parametrize('dtype', ['int64', 'int32', 'str', 'object', 'category'])
@pytest.mark.parametrize('item', ['movieId', 'title'])
def test_vocab_split_and_sizes_as_fastai(ratings, dtype, item):
    df = ratings[['userId', item, 'rating']].copy()
    if item == 'movieId': df[item] = _ids(df[item])[dtype]
    else: df['userId'] = _ids(df['userId'])[dtype]
    s,o = _pair(df, item_name=item)
    for n in ('userId', item): assert list(s.classes[n]) == list(o.classes[n]), n
    assert get_emb_sz(s) == get_emb_sz(o) == get_emb_sz(o.train_ds) == get_emb_sz(s.train_ds)
    for a,b in ((s.train, o.train), (s.valid, o.valid)):
        sa,ob = a.items, b.items
        assert list(sa.index) == list(ob.index)
        for n in ('userId', item): assert sa[n].astype('int64').tolist() == ob[n].tolist()
        assert np.allclose(sa.rating.to_numpy(np.float32), ob.rating.to_numpy())
    assert len(s.train) == len(o.train) and s.bs == o.bs == 64

def test_one_seeded_epoch_as_fastai(ratings):
    "Stock `collab_learner` code on our bs=64 loaders: the same batches in the same order, the same losses"
    res = []
    for cls in (CollabDataLoaders, CFDataLoaders):
        set_seed(42, reproducible=True)
        dls = cls.from_df(ratings, item_name='title', seed=42, device='cpu')
        learn = collab_learner(dls, n_factors=50, y_range=(0, 5.5))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 5e-3, wd=0.1)
        res.append((learn.recorder.values[-1], learn.model.u_weight.weight.detach().clone()))
    (vs,ws),(vo,wo) = res
    assert np.allclose(vs, vo, rtol=1e-4), (vs, vo)
    assert torch.allclose(ws, wo, atol=1e-5)

def test_fastai_keywords(ratings, tmp_path):
    fn = tmp_path/'r.csv'; ratings[['userId','movieId','rating']].to_csv(fn, index=False)
    kw = dict(shuffle_train=True, val_shuffle=False, num_workers=0, drop_last=True, pin_memory=False, bs=32, val_bs=128)
    with pytest.warns(DeprecationWarning, match='shuffle_train'):
        s,o = CollabDataLoaders.from_csv(fn, seed=1, **kw),CFDataLoaders.from_csv(fn, seed=1, **kw)
    assert (o.train.bs, o.valid.bs, o.train.drop_last, o.valid.shuffle) == (s.train.bs, s.valid.bs, s.train.drop_last, s.valid.shuffle)
    assert list(o.classes['movieId']) == list(s.classes['movieId'])
    with pytest.raises(TypeError, match="unexpected keyword argument.*'bsz'"): CFDataLoaders.from_df(ratings, bsz=64)

@pytest.fixture(scope='module')
def trained(ratings):
    dls = CFDataLoaders.from_df(ratings, item_name='title', seed=42, device='cpu')
    learn = collab_learner(dls, n_factors=20, y_range=(0, 5.5))
    with learn.no_bar(): learn.fit_one_cycle(1, 5e-3, wd=0.1)
    return learn

def test_show_batch_and_results(trained):
    dls = trained.dls
    df = dls.train.show_batch(show=False)
    assert list(df.columns) == ['userId', 'title', 'rating'] and len(df) == 9
    dls.show_batch()
    trained.show_results()
    b = dls.valid.one_batch()
    res = dls.valid.show_results(b, trained.model(b[0]), show=False)
    assert list(res.columns) == ['userId', 'title', 'rating', 'rating_pred']
    assert np.allclose(res.rating_pred, trained.model(b[0])[:9].detach().numpy())

def test_predict_a_row(trained, ratings):
    row = ratings.iloc[0]
    dec,p,_ = trained.predict(row)
    want = trained.model(trained.dls.test_dl(ratings.iloc[:1]).x)[0]
    assert isinstance(dec, float) and abs(dec - float(want)) < 1e-5 and abs(float(p) - dec) < 1e-5
    dec2,_,_ = trained.predict({'userId': row.userId, 'title': row.title})
    assert abs(dec2 - dec) < 1e-6
    inp,dec3,_,_ = trained.predict(row, with_input=True)
    assert inp['title'] == row.title and inp['userId'] == row.userId

def test_get_preds_test_dl_and_validate(trained, ratings):
    dl = trained.dls.test_dl(ratings.iloc[:100])
    p,t = trained.get_preds(dl=dl)
    assert p.shape == (100,) and torch.equal(t.view(-1), torch.tensor(ratings.rating.iloc[:100].to_numpy(np.float32)))
    v = trained.validate()
    p,t = trained.get_preds()
    assert abs(v[0] - float(((p.view(-1) - t.view(-1))**2).mean())) < 1e-4

def test_top_losses_items(trained):
    interp = Interpretation.from_learner(trained)
    losses,idx,items = interp.top_losses(3, items=True)
    assert len(items) == 3 and list(items.columns) == ['userId', 'title', 'rating']
    assert (items.index == trained.dls.valid.items.index[idx.numpy()]).all()

def test_lr_find_fine_tune_callbacks_export(ratings, tmp_path):
    dls = CFDataLoaders.from_df(ratings, item_name='title', seed=42, device='cpu', path=tmp_path)
    learn = collab_learner(dls, n_factors=10, y_range=(0, 5.5), use_nn=True, layers=[20])
    with learn.no_bar(), learn.no_logging():
        sug = learn.lr_find(show_plot=False)
        learn.fine_tune(1, 1e-3)
        learn.fit(3, 1e-3, cbs=[SaveModelCallback(fname='best'), EarlyStoppingCallback(patience=0), CSVLogger(fname='hist.csv')])
    assert sug.valley > 0 and (tmp_path/'models'/'best.pth').exists() and (tmp_path/'hist.csv').exists()
    learn.export('learn.pkl')
    l2 = load_learner(tmp_path/'learn.pkl')
    dl = l2.dls.test_dl(ratings.iloc[:50])
    assert torch.allclose(l2.get_preds(dl=dl)[0], learn.get_preds(dl=learn.dls.test_dl(ratings.iloc[:50]))[0])

def test_cf_learner_answers_embedding_dot_bias(ratings):
    dls = CFDataLoaders.from_df(ratings, item_name='title', seed=42, device='cpu')
    learn = cf_learner(dls, n_factors=16)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1)
    m = learn.model
    top = ratings.title.value_counts().index[:5].tolist()
    ref = EmbeddingDotBias.from_classes(16, dls.classes, y_range=(0, 5.5))
    ref.load_state_dict({k: v.detach() for k,v in m.state_dict().items()})
    assert torch.allclose(m.bias(top, is_item=True), ref.bias(top, is_item=True))
    assert torch.allclose(m.weight(top, is_item=True), ref.weight(top, is_item=True))
    assert m.bias([1, 2], is_item=False).shape == (2,) and m.weight(top).pca(3).shape == (5, 3)
    assert m.classes is dls.classes and (m.user, m.item) == ('userId', 'title')
    assert m.u_weight is m.u_weight and m.i_bias.weight.shape == (len(dls.classes['title']), 1)
    x = dls.valid.one_batch()[0]
    assert torch.allclose(m(x), ref(x), atol=1e-5)
    with pytest.raises(KeyError, match="isn't in the training data"): m.bias(['no such film'])
    assert learn.metrics[0].name == 'rmse' and 'rmse' in learn.recorder.metric_names

def test_default_bs_belongs_to_the_fast_path(ratings):
    dls = CFDataLoaders.from_df(ratings, item_name='title', seed=42, device='cpu')
    assert dls.bs == 64 and not dls.bs_given
    learn = cf_learner(dls)
    assert learn.dls.train.bs > 64 and learn.dls.classes is dls.classes
    assert cf_learner(CFDataLoaders.from_df(ratings, seed=42, bs=256, device='cpu')).dls.train.bs == 256
    assert cf_learner(dls, fast=False).dls.train.bs == 64

def test_no_warning_on_the_bundled_data():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        CFDataLoaders.from_movielens(seed=42)
