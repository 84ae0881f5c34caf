"""Fixed, parameter-free transforms: the Haar wavelet front end of the LiteVAE encoder."""

from .haar import haar_dwt, haar_idwt, haar_wavedec, haar_waverec

__all__ = ["haar_dwt", "haar_idwt", "haar_wavedec", "haar_waverec"]
