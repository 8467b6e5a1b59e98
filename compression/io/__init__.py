"""Stage 1, io: file formats in and out of their containers: ONNX protos (``onnx_io``), PyTorch
state dicts and safetensors (``torch_io``), the architecture JSON (``architecture``: v1 chains and
v2 blocks; ``architecture_layers``: its leaf layers) and its ONNX graph writer
(``architecture_onnx``). May import only the top-level ``errors`` and ``spec``; imported by
``graph`` and above. Nothing here knows what a layer is.
"""
