"Training: models, losses, metrics, the `Learner`, checkpoints, pictures, options, many processes and the training loop."
