"The reference data sets: Penn-Fudan, Oxford-IIIT Pet, Cityscapes pairs and BSDS500, each read, trained and scored."
