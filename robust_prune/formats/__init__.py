"""The field's exchange formats: ONNX networks, VNN-LIB properties and
VNN-COMP result files (issue 14)."""
