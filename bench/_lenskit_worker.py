"""Train LensKit's biased ALS (`lenskit.als.BiasedMFScorer`) on an `.npz` of ratings; write its parameters to another `.npz`.

Run by `bench/peers.py` under the interpreter named by `--lenskit-python` (LensKit 2025 needs pandas < 3, so it lives
in its own environment, e.g. `.venv-bench`):  python _lenskit_worker.py IN.npz OUT.npz '{"embedding_size": 50}'
"""
import json, sys, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from lenskit.data import from_interactions_df
from lenskit.als import BiasedMFScorer

def main(fin, fout, config='{}'):
    torch.set_num_threads(1)
    d = np.load(fin)
    df = pd.DataFrame({'user_id': d['u'], 'item_id': d['i'], 'rating': d['r']})
    df = df.groupby(['user_id', 'item_id'], as_index=False).rating.mean()   # LensKit refuses repeated pairs: their mean
    data = from_interactions_df(df)
    model = BiasedMFScorer(**json.loads(config))
    start = time.perf_counter()
    model.train(data)
    fit_s = time.perf_counter() - start
    b = model.bias
    np.savez(fout, users=np.asarray(data.users.ids()), items=np.asarray(data.items.ids()), g=np.float64(b.global_bias),
             bu=np.asarray(b.user_biases), bi=np.asarray(b.item_biases), U=np.asarray(model.user_embeddings),
             V=np.asarray(model.item_embeddings), fit_s=np.float64(fit_s))

if __name__ == '__main__': main(*sys.argv[1:])
