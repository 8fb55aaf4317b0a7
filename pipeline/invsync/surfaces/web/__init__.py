"""The merchant upload page: ``invsync serve`` (see :mod:`invsync.surfaces.web.app`)."""
