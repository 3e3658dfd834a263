"""AWQ 4-bit quantization of GLM-4.1V checkpoints (`vlmq quantize`), and reading them back on CPU.

awq_format.py   the AWQ gemm tensors: quantize, pack, unpack, config
awq_search.py   the AWQ algorithm on one decoder layer (scale search, clipping)
calibration.py  the user's pages: a folder of images/PDFs or a vlmq job's prepared pages
checks.py       what is refused up front (not GLM-4.1V, already quantized, DST exists, ...)
checkpoint.py   the whole run: load, calibrate, quantize layer by layer, write
loading.py      AWQ checkpoints into the CPU (transformers) engine, unpacked to float
"""
