"From files to batches: synthetic scenes, the preparation of large scenes into tiles, the item cache, fastai `DataBlock`s and window sampling."
