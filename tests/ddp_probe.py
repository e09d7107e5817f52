"Run by test_distributed.py under torchrun: `unet_fastai_train` itself, plus a record of each process's training shard"
import json, os
from pathlib import Path
from fastai.distributed import DistributedDL
from unet_fastai.cli.main import unet_fastai_train

_get_idxs = DistributedDL.get_idxs

def get_idxs(self):
    "The shard of this process (its windows, for window training), written to $PROBE_DIR/rank<r>.jsonl (a line an epoch) when it is the training loader's"
    idxs = _get_idxs(self)
    if self.dl.shuffle:
        w = getattr(self.dl, 'windows', None)  # window training: the windows the items are this epoch
        with open(Path(os.environ['PROBE_DIR'])/f'rank{self.rank}.jsonl', 'a') as f:
            f.write(json.dumps([str(self.dataset.items[i] if w is None else w.window(self.dataset.items[i])) for i in idxs]) + '\n')
    return idxs

DistributedDL.get_idxs = get_idxs
unet_fastai_train()
