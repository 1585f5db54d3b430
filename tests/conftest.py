import os, warnings, pytest
os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture
def fastai_home(tmp_path, monkeypatch):
    "An empty fastai data/archive folder, so nothing cached on this machine is used"
    import fastai_cf.movielens as fd
    home = tmp_path/'fastai_home'
    monkeypatch.setattr(fd, 'fastai_path', lambda folder: home/folder)   # fastai caches its config per process
    return home

@pytest.fixture
def no_network(monkeypatch):
    "Fail any download attempt, as on an offline machine"
    import fastdownload
    def _offline(url, dest=None, **kwargs): raise OSError(f"network unreachable: {url}")
    monkeypatch.setattr(fastdownload, 'download_url', _offline)
