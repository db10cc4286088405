"""The physics check of candidates (issue 12) and the phase composition (issue 13).

Pure numpy/scipy: :mod:`.references` (each class ready to fit), :mod:`.observed` (the scan on
its whole range), :mod:`.prefilter` (every class at every isotropic cell scale by FFT in ln d),
:mod:`.fit` (variable-projection whole-pattern fit), :mod:`.check` (ranking with the network,
"nothing fits", composition with Hill-Howard weight fractions).
"""
