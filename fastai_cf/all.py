"Everything a notebook needs: `from fastai_cf.all import *`"
from fastai.basics import *
from fastai.collab import *
from fastai.callback.all import *
from .data import *
try:
    from .models import *
    from .learner import *
except ImportError: pass
