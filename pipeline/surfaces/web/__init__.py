"""The merchant upload page: ``invsync serve`` (see :mod:`pipeline.web.app`)."""
