"""DICOMweb (PS3.18) logic behind ``routers/dicomweb.py``: media types, multipart bodies, queries,
DICOM JSON, storing and retrieving. Route handlers only wire these together.
"""
