"""The lesson protocol through fastai_cf: DotProduct, DotProductBias, DotProductBias with wd=0.1.

ml-latest-small ratings merged with titles; users `userId`, items `title`, target `rating`; fastai's 80/20
`RandomSplitter` with seed 42; `n_factors=50`, `y_range=(0, 5.5)`, bs 64, `fit_one_cycle(5, 5e-3)`.
Prints each experiment's per-epoch table (as the lesson shows them), then the final figures beside stock
fastai 2.8.12's, measured on the same split (see DESIGN.md). `set_seed(42, reproducible=True)` before each
experiment makes two runs print the same losses.

    python bench/lesson.py            # about 5 minutes on 2 cores
    python bench/lesson.py --quick    # 1 epoch each, a smoke test
"""
import argparse, time, warnings
warnings.filterwarnings('ignore', category=FutureWarning)   # torch's `jit.script` notice, raised while fastai imports
from fastai.torch_core import set_seed
from fastai_cf.data import CFDataLoaders, load_movielens
from fastai_cf.learner import cf_learner

# Stock fastai 2.8.12 on this protocol, bs=64 (valid MSE after 5 epochs, fit seconds), from DESIGN.md
STOCK = {'DotProduct': (0.869, 73), 'DotProductBias': (0.815, 98), 'DotProductBias, wd=0.1': (0.758, 70)}
EXPERIMENTS = [('DotProduct', 'dot', None), ('DotProductBias', 'dot_bias', None), ('DotProductBias, wd=0.1', 'dot_bias', 0.1)]
COLS = ['epoch', 'train_loss', 'valid_loss', 'time']

def _row(vals):
    "One line of a table in the layout of fastai's console logger"
    print('  '.join(f'{v:<10.6f}' if isinstance(v, float) else f'{str(v):<10}' for v in vals), flush=True)

def run(dls, model, wd, epochs, lr=5e-3):
    "Train one lesson experiment, printing its table; return per-epoch valid MSEs and the fit time"
    set_seed(42, reproducible=True)
    learn = cf_learner(dls, model, n_factors=50, y_range=(0, 5.5), metrics=[], wd=wd)
    learn.logger = _row
    _row(COLS)
    start = time.perf_counter()
    with learn.no_bar(): learn.fit_one_cycle(epochs, lr)
    return [float(v[1]) for v in learn.recorder.values], time.perf_counter() - start

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='1 epoch per experiment (smoke test)')
    args = p.parse_args()
    epochs = 1 if args.quick else 5
    df = load_movielens()
    dls = CFDataLoaders.from_df(df, user_name='userId', item_name='title', rating_name='rating', seed=42, bs=64)
    print(f"ml-latest-small: {len(df):,} ratings, {df.userId.nunique()} users, {df.title.nunique():,} titles; "
          f"fit_one_cycle({epochs}, 5e-3), n_factors=50, y_range=(0, 5.5), bs=64, seed=42\n")
    res = {}
    for name, model, wd in EXPERIMENTS:
        print(f"## {name}")
        res[name] = run(dls, model, wd, epochs)
        print()
    print(f"## Summary (valid MSE after {epochs} epoch{'s' if epochs > 1 else ''}; stock fastai after 5)")
    print(f"{'model':<24}{'valid MSE':>10}{'RMSE':>8}{'best (epoch)':>15}{'fit s':>8}{'fastai MSE':>12}{'Δ MSE':>8}{'fastai s':>10}")
    for name, (mses, secs) in res.items():
        best = min(range(len(mses)), key=mses.__getitem__)
        f_mse, f_secs = STOCK[name]
        print(f"{name:<24}{mses[-1]:>10.3f}{mses[-1]**0.5:>8.3f}{f'{mses[best]:.3f} ({best})':>15}{secs:>8.1f}"
              f"{f_mse:>12.3f}{mses[-1]-f_mse:>+8.3f}{f_secs:>10}")

if __name__ == '__main__': main()
