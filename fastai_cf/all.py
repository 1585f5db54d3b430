"Everything a notebook needs: `from fastai_cf.all import *`"
from . import data as _data   # first: `data` imports fastai without the notices fastai's own import raises
from fastai.basics import *
from fastai.collab import *
from fastai.callback.all import *
from .data import *
from .models import *
from .optimizer import *
from .learner import *
from .callback.wd import *
from .inference import *
from .interpret import *
from fastai.tabular.model import get_emb_sz, emb_sz_rule
from .callback.checkpoint import *
from .distributed import *
from .metrics import *
