"The command line: the training launcher, the web demo and the demo job."
