"""Make a trained run fast and small on a CPU, and prove it is still the same model.

- ``export``: ONNX (opset 18, free batch size) and TorchScript, each checked against eager on validation.
- ``quantize``: int8 with ONNX Runtime: static QDQ for CNNs, dynamic for Linear/recurrent models.
- ``compress``: magnitude and channel pruning with a short fine-tune; low-rank Linear layers.
- ``variants``: ``medsight optimize``: each variant evaluated like the original, in ``RUN/variants/``.
- ``bench``: size, latency, throughput and AUC side by side; ``serving.json`` names the variant to serve.
- ``ensemble``: mean of several runs' probabilities as a run folder of its own.
- ``predictors``: one calling convention for eager, TorchScript and ONNX Runtime models.
"""
