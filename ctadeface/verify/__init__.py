"""Verify: look for a face on skin renders of a CT before and after defacing.

``render`` (skin isosurface pictures), ``detect`` (MTCNN faces, FaceNet identity), ``verdict``
(the per-scan outcome and status), ``figure`` (the QC figure); ``python -m ctadeface.verify``
checks any pair of images.
"""
