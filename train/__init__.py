"""Training for facevalue: fit FER2013 CNNs with Keras and export them to ONNX.

The only part of the project that imports tensorflow or tf2onnx
(``pip install 'facevalue[train]'``).
"""
