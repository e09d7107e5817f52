"Using a trained model: loading it, predicting scenes of any size, prediction jobs on many processes, evaluation and ONNX export."
