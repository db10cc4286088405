"""The physics check: prefilter the whole library, fit the candidates, rank them with the
network, and decompose the scan into up to four phases with weight fractions.

Ranking (one rule, no per-file thresholds). For candidate i with prior cost P_i (its cell change
and texture, :func:`~xrd_agent.verify.fit.prior_residuals`), k_i nonlinear cell parameters and
network probability q_i, and its fit's marginal misfit X_i and log-determinant D_i with every
reflection's intensity uncertain (:mod:`~xrd_agent.verify.marginal`, resolution elements, at the
noise variance T tau):

    log w_i = -(X_i - X_best) / 2 - (D_i - D_best) / 2 - P_i / 2 - k_i ln(n / tau) / 2
              + ln(q_i / 2 + 1 / (2 K))

T >= 1 inflates the noise so that the best fit counts as statistically adequate (systematic misfit
of a real scan is not evidence against every candidate alike); tau >= 1, the
best fit's residual correlation length in resolution elements, counts only the independent ones
(the composition's F-test does the same); the BIC term charges each free cell parameter; the network's probability is a prior mixed half
and half with a uniform one over the K fitted candidates, so a material the network ranks 30th
but that fits clearly better still wins, and near-equal fits are settled by the network. A
candidate whose lattice moved beyond the allowed change (+-12 % along some principal direction,
which an oblique cell's independently bounded metric groups can reach) gets no weight
(:func:`~xrd_agent.verify.fit.lattice_allowed`).
The posterior of the top material (by the plain rule, -(chi2_i - chi2_best) / (2 T tau) in place of
the marginal terms: :func:`rank`), times the fit quality (share of the
diffraction signal the best candidate explains, 0 at ``min_explained``, 1 at ``full_explained``),
times the prior probability of the cell change and texture it needed relative to none
(exp(-P/2): 4 % on one axis of a framework costs a factor 0.61, 9 % on three axes 0.001; a dense
solid's narrower prior, 1.5 %, charges more; March-Dollase r = 0.6 costs 0.61) is the confidence; when no candidate explains at least
``min_explained`` of it, or the answer is not significant against the background alone (the
composition's F-test below, which a scan of a few broad lines fails whatever it is fitted with),
the check says so ("nothing fits": an unknown phase, fit quality 0).

Composition: after the best phase, the residual is prefiltered again and the next phase is
fitted jointly (earlier phases' cells held, all scales re-solved). It is kept only when an
F-test over resolution elements says the added parameters improve the fit beyond noise
(p < ``mixture_p``) AND it removes at least ``mixture_min_gain`` of the remaining misfit (a
real single-phase scan's systematic misfit is not a second phase) AND the same F-test passes on
the points where only it has reflections (the earlier phases predict less than twice the noise
there: a phase is seen by lines of its own, not by re-weighting the others'). Where two or more
phases were admitted, the further phases tried last are listed right after them (the best one
these tests refused first), and when the phases together explain too little to be reported, they
still follow the best fit in the ranking (candidates, not a composition). Weight fractions follow
Hill & Howard (1987): W_p = S_p (ZMV)_p / sum_i S_i (ZMV)_i, with uncertainties from the
linear least-squares covariance of the scales.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from xrd_agent.verify.fit import (DENSE_STRAIN_PRIOR, FitResult, Fitter, Located, PhaseState, lattice_allowed,
                                  points_per_element, prior_residuals, strain_cost)
from xrd_agent.verify.marginal import Marginal
from xrd_agent.verify.observed import Observed
from xrd_agent.verify.prefilter import Hit, LnDIndex, PrefilterResult
from xrd_agent.verify.references import Reference


#: Parameters every fit of a scan has besides its phases' (background and profile), which the
#: F-tests' degrees of freedom leave out.
SHARED_PARAMETERS = 12


@dataclass(frozen=True)
class VerifyPolicy:
    network_candidates: int = 5  # the network's most probable classes fitted ...
    per_material: int = 3  # ... at most this many determinations of one material among them
    prefilter_candidates: int = 6  # the prefilter's best fitted (beyond the network's), ...
    anisotropic: int = 60  # ... its isotropic and anisotropic orders in turn; the screen's best searched anisotropically
    min_explained: float = 0.6  # share of the background-only misfit the answer (its phases together) must remove
    min_seed: float = 0.2  # ... the best single phase must remove for a composition to be sought from it
    full_explained: float = 0.9  # ... at which the fit quality no longer lowers the confidence
    max_phases: int = 4  # lab products of three and four phases are scored
    mixture_p: float = 1e-3
    mixture_min_gain: float = 0.15
    # share of the phases' diffraction signal below which a further phase is not reported (what a lab
    # scan tells from nothing; a share of the signal, not of the mass: 1 wt% of a heavy-metal phase
    # beside a light one is plain to see)
    min_share: float = 0.02
    mixture_max_strain: float = 9.0  # strain prior cost (3 sigma) a further phase's cell may need
    # strain prior cost (two sigma of a dense solid's prior, whichever the phase: :func:`cells_kept`)
    # within which every phase of a composition keeps its cell for the composition to answer
    # without explaining the scan nearly whole (``full_explained``)
    composed_max_strain: float = 4.0
    second_candidates: int = 4  # residual prefilter hits located for a further phase
    second_refined: int = 2  # of the located further-phase candidates, refined at full resolution
    texture_candidates: int = 3  # leading fits refined with preferred orientation (and their own profile)
    shape_candidates: int = 2  # best located candidates whose profile is refined; the rest keep the best one's
    max_overlap: float = 0.7  # a further phase whose profile has this cosine with the earlier phases adds nothing of its own


@dataclass(frozen=True)
class CandidateFit:
    index: int
    refcode: str
    name: str
    probability: float  # network
    prefilter: float  # best ln-d cosine
    rwp: float
    rwp_background: float
    explained: float  # 1 - chi2 / chi2_background
    posterior: float
    cell: tuple[float, ...]  # refined a, b, c, alpha, beta, gamma
    cell_change: tuple[float, ...]  # % for a, b, c; degrees for the angles
    zero_shift: float
    fwhm: float  # deg at 2-theta 30 deg (on the scan's wavelength)
    texture: tuple[int, float]  # (axis 0/1/2 for a*/b*/c*, -1 none; March-Dollase r)

    def to_dict(self) -> dict[str, object]:
        return {"rwp": round(self.rwp, 4), "rwp_background": round(self.rwp_background, 4),
                "explained": round(self.explained, 4), "posterior": round(self.posterior, 4),
                "cell": [round(x, 4) for x in self.cell], "cell_change": [round(x, 2) for x in self.cell_change],
                "zero_shift": round(self.zero_shift, 4), "prefilter": round(self.prefilter, 4)}


@dataclass(frozen=True)
class Phase:
    index: int
    refcode: str
    name: str
    weight_fraction: float | None  # None when the references carry no absolute scale
    uncertainty: float | None
    explained_gain: float  # share of the remaining misfit this phase removed when added
    p_value: float | None  # F-test of adding it (None for the first phase)


@dataclass(frozen=True)
class Verification:
    candidates: tuple[CandidateFit, ...]  # ranked by posterior
    phases: tuple[Phase, ...]  # the composition (first = the best candidate)
    explained: float  # of the best candidate
    fits: bool  # False: nothing in the library explains the scan
    confidence: float
    seconds: float

    @property
    def mixture(self) -> bool:
        return len(self.phases) > 1


def _candidate(fit: FitResult, ref: Reference, prob: float, pf: float, posterior: float, k: int = -1
               ) -> CandidateFit:
    """Phase ``k`` of ``fit`` (its last by default) as a ranked candidate."""
    k = k % len(fit.phases)
    st = fit.phases[k]
    t30 = np.tan(np.radians(15.0))
    return CandidateFit(ref.index, ref.refcode, ref.name, float(prob), float(pf), fit.rwp, fit.rwp_background,
                        fit.improvement, float(posterior), tuple(float(x) for x in fit.cell(k)),
                        tuple(float(x) for x in fit.cell_change(k)), fit.shape.zero,
                        float(np.sqrt(fit.shape.w + fit.shape.u * t30 * t30)), (st.axis, float(np.exp(st.ln_r))))


def _put_first(cands: tuple[CandidateFit, ...], indices: Sequence[int], fits: Sequence[FitResult],
               probs: np.ndarray, refs: Sequence[Reference | None]) -> tuple[CandidateFit, ...]:
    """``cands`` with the classes ``indices`` first, in that order: as fitted where they were
    candidates, else as their phase of the first of ``fits`` that holds them (a phase found or
    tried in a residual was no candidate)."""
    known = {c.index: c for c in cands}
    slot: dict[int, tuple[FitResult, int]] = {}
    for fit in fits:
        for k, st in enumerate(fit.phases):
            slot.setdefault(st.ref.index, (fit, k))
    indices = list(dict.fromkeys(indices))
    head = tuple(known.get(i) or _candidate(slot[i][0], refs[i], probs[i], 0.0, 0.0, slot[i][1])
                 for i in indices)
    first = set(indices)
    return (*head, *[c for c in cands if c.index not in first])


def cells_kept(phases: Sequence[PhaseState], max_cost: float) -> bool:
    """Whether every phase's cell change costs at most ``max_cost`` under a dense solid's strain
    prior, whatever the phase: the cell kept where a solid that does not breathe keeps it (two
    sigma: 1.7 % on every axis, 3 % on one). A framework's own, wider prior would let a stack of
    wrong frameworks, each moved by 4-5 %, pass as kept."""
    return all(float(np.sum(strain_cost(st, DENSE_STRAIN_PRIOR) ** 2)) <= max_cost for st in phases)


def signal_explained(fit: FitResult) -> float:
    """Share of the diffraction signal's misfit the fit removes: the background-only misfit less
    what counting noise alone leaves (one per resolution element) is the signal's."""
    signal = fit.chi2_background - fit.n_elements
    if signal <= 0:
        return fit.improvement
    return float((fit.chi2_background - fit.chi2) / signal)


def rank(fits: Sequence[FitResult], probs: Sequence[float], marginal: Marginal | None = None,
         plain: bool = False) -> np.ndarray:
    """Posterior weights of the fitted candidates (the rule in the module docstring).

    With the scan (``marginal``), each fit's misfit is its marginal one with every reflection's
    intensity uncertain (:mod:`~xrd_agent.verify.marginal`: a structure is judged by where its
    lines are more than by how strong the CIF draws them, and charged for every line it draws),
    the noise inflated until the best fit is adequate under that model, and the best fit's residual
    also sets how many of the resolution elements are independent: a measured scan's misfit (a
    profile the model lacks) can be correlated over several elements, and each counted as
    independent evidence would let a slightly smaller misfit outweigh the network and the priors
    (Berar & Lelann 1991 correct Rietveld standard uncertainties for the same serial correlation).
    The noise is inflated by the residual's correlation length in resolution elements too, and the
    BIC's sample size divided by it (:func:`correlation_length`). Without the scan, or with
    ``plain``, the plain chi^2 tempered by the best fit's reduced chi^2 (and the correlation
    length): the rule the confidence's share keeps, on which its threshold was set (the marginal
    posterior is sharper, and named a real scan the library lacks confidently)."""
    chi = np.array([f.chi2 for f in fits])
    prior_cost = np.array([f.prior for f in fits])
    allowed = np.array([all(lattice_allowed(st) for st in f.phases) for f in fits])
    if allowed.any():  # a lattice beyond the allowed change is not a fit of the structure
        prior_cost = np.where(allowed, prior_cost, np.inf)
    k = np.array([f.phases[-1].ref.n_groups for f in fits], float)
    n = max(fits[0].n_elements, 2.0)
    best = int(np.argmin(chi + prior_cost))
    dof = max(n - k[best] - 8.0, 1.0)
    temp = max(1.0, fits[best].chi2 / dof)
    tau = 1.0
    logdet = np.zeros(len(fits))
    if marginal is not None:
        y = marginal.obs.y
        tau = max(1.0, correlation_length(y - fits[best].linear.model) * n / y.size)
    if marginal is None or plain:
        misfit = chi / (temp * tau)
    else:
        scale = marginal.noise_scale(fits[best], dof, temp) * tau
        misfit, logdet = np.array([marginal.misfit(f, scale) for f in fits]).T
    prior = 0.5 * np.asarray(probs, float) + 0.5 / len(fits)
    # the strain prior is a prior: it is not tempered with the data's misfit
    logw = (-(misfit - misfit[best]) / 2 - (logdet - logdet[best]) / 2 - prior_cost / 2
            - k * np.log(max(n / tau, 2.0)) / 2 + np.log(prior))
    w = np.exp(logw - logw.max())
    return w / w.sum()


def weight_fractions(fit: FitResult) -> tuple[list[float | None], list[float | None]]:
    """Hill-Howard weight fractions and their standard uncertainties for every phase of ``fit``."""
    refs = [st.ref for st in fit.phases]
    if not all(r.absolute and np.isfinite(r.cell_mass) and r.cell_mass > 0 for r in refs):
        return [None] * len(refs), [None] * len(refs)
    e = fit.scale_matrix()
    s = fit.linear.coef @ e
    zmv = np.array([r.cell_mass * r.volume for r in refs])
    m = s * zmv
    total = m.sum()
    if total <= 0:
        return [None] * len(refs), [None] * len(refs)
    w = m / total
    unc: list[float | None] = [None] * len(refs)
    if fit.covariance is not None:
        cov_s = e.T @ fit.covariance @ e
        # dW_p/dS_q = zmv_q (delta_pq total - m_p) / total^2
        jac = (np.diag(np.full(len(refs), total)) - m[:, None]) * zmv[None, :] / total**2
        var = np.einsum("ij,jk,ik->i", jac, cov_s, jac)
        unc = [float(np.sqrt(max(v, 0.0))) for v in var]
    return [float(x) for x in w], unc


class Checker:
    """The physics check over one library: references and their ln-d FFTs held from load."""

    def __init__(self, refs: list[Reference | None], policy: VerifyPolicy = VerifyPolicy(),
                 materials: Sequence[int] | None = None) -> None:
        self.refs = refs
        self.policy = policy
        self.index = LnDIndex(refs)
        # material of each class (xrd_agent.materials), for :meth:`candidates`
        self.materials = np.arange(len(refs)) if materials is None else np.asarray(materials)

    def candidates(self, probs: np.ndarray, pre: PrefilterResult, engine_order: Sequence[int] = ()
                   ) -> list[int]:
        """The classes to fit: the network's ``network_candidates`` most probable classes, at most
        ``per_material`` determinations of one material (the network splits a material over its
        determinations, and which of them fits a sample best it cannot tell: a simulated HKUST-1
        scan fitted by one HKUST-1 determination lost to a near-isostructural Cu MOF that three of
        them beat), then the engine's own answers (``engine_order``, the network's order after the
        peak match: a material it lifted from a few per cent is not among the network's best
        classes) of materials not among them, then the prefilter's best ``prefilter_candidates``
        materials not among them, from its isotropic and its anisotropic order in turn (a
        breathing framework ranks low in the first, a clean scan's answer may not lead the second)."""
        pol = self.policy
        chosen: list[int] = []
        count: dict[int, int] = {}
        for j in np.argsort(-probs, kind="stable"):
            if len(chosen) == pol.network_candidates or probs[j] <= 0:
                break
            m = int(self.materials[j])
            if self.refs[int(j)] is not None and count.get(m, 0) < pol.per_material:
                chosen.append(int(j))
                count[m] = count.get(m, 0) + 1
        for j in engine_order:
            m = int(self.materials[j])
            if self.refs[int(j)] is not None and m not in count:
                chosen.append(int(j))
                count[m] = 1
        added = 0
        for hit in pre.interleaved(exclude=set(chosen)):
            if added == pol.prefilter_candidates:
                break
            m = int(self.materials[hit.index])
            if m not in count:
                chosen.append(hit.index)
                count[m] = 1
                added += 1
        return chosen

    def check(self, obs: Observed, probs: np.ndarray | None = None, engine_order: Sequence[int] = ()
              ) -> Verification:
        # The check's linear algebra is many small dense and banded problems (NNLS, QR, a banded
        # Cholesky per candidate): OpenBLAS's threads mostly wait for each other on them, and on a
        # machine whose cores are busy (a second check or evaluation beside it) for the other
        # processes too (bench_verify.py, docs/model.md "Speed"). One thread, only while the check runs.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._check(obs, probs, engine_order)

    def _check(self, obs: Observed, probs: np.ndarray | None, engine_order: Sequence[int]) -> Verification:
        t0 = time.perf_counter()
        pol = self.policy
        n = len(self.refs)
        probs = np.zeros(n) if probs is None else np.asarray(probs, float)
        pre = self.index.search(obs, pol.anisotropic)
        chosen = self.candidates(probs, pre, engine_order)
        fitter = Fitter(obs)
        if not chosen:
            return Verification((), (), 0.0, False, 0.0, time.perf_counter() - t0)
        # every candidate located cheaply (broad peaks, scan averaged down); the best located
        # ones refine the scan's instrument profile (zero shift, widths), and the others keep the
        # best of those: the profile belongs to the scan, and refitting it per candidate was
        # most of the time. The leading fits are refined again with texture and their own profile.
        located = []
        for j in chosen:
            ref = self.refs[j]
            assert ref is not None
            located.append(fitter.locate(ref, float(pre.scales[j]) if pre.scores[j] > 0 else 1.0, lnp=pre.cell(j)))
        leads = [int(i) for i in np.argsort([loc.cost for loc in located])[: pol.shape_candidates]]
        own = {i: fitter.fit(self.refs[chosen[i]], texture=False, located=located[i]) for i in leads}
        best_own = min(own.values(), key=lambda f: f.chi2 + f.prior)
        fitter.ppe = points_per_element(obs, best_own.shape)
        fits: list[FitResult] = []
        for i, j in enumerate(chosen):
            ref = self.refs[j]
            assert ref is not None
            fits.append(fitter.result(list(own[i].phases), own[i].shape) if i in own else
                        fitter.fit(ref, shape=best_own.shape, hold_shape=True, texture=False, located=located[i]))
        # texture (March-Dollase) only for the leading fits: it refines, it rarely reorders far
        marginal = Marginal(obs, fitter.ppe)
        first = rank(fits, [probs[j] for j in chosen], marginal)
        for i in np.argsort(-first)[: pol.texture_candidates]:
            st = fits[i].phases[-1]
            # from where its first fit left it: the cell is found, texture and its own profile are refined
            fits[i] = fitter.fit(st.ref, shape=fits[i].shape, located=Located(fits[i].phases, fits[i].shape, 0.0))
        post = rank(fits, [probs[j] for j in chosen], marginal)
        order = np.argsort(-post)
        cands = tuple(_candidate(fits[i], self.refs[chosen[i]], probs[chosen[i]], pre.scores[chosen[i]], post[i])
                      for i in order)
        best_fit = fits[int(order[0])]
        explained = best_fit.improvement
        judged = best_fit  # the fit whose share ``explained`` is
        # A phase of a three- or four-phase product explains well under half the signal alone:
        # the composition is sought from any best fit that explains a share worth building on,
        # and "nothing fits" is judged on what the composition explains (each phase it adds
        # passed the F-test and removed a share of the misfit).
        phases, comp, further = (self._compose(fitter, obs, best_fit, [fits[i] for i in order])
                                 if explained >= pol.min_seed else ((), None, ()))
        if comp is not None and len(phases) > 1 and explained < pol.min_explained <= comp.improvement:
            # Phases none of which explains the scan alone count only when together they explain
            # it nearly whole: a stack of wrong frameworks, each with its cell moved, soaks up
            # 60-88 % of a MOF the library lacks (the real Zn-TBAPy scans). "Whole" is the
            # diffraction signal, noise apart: a four-phase product's diluted lines leave the
            # counting noise a large share of the background-only misfit that no model removes.
            # ... or when every phase keeps its cell: the lab's own phases, found at their
            # cells, explained 73-89 % of measured three- and four-phase sums (CIF intensities
            # and profiles miss the rest), and no composition was reported; a stack of the wrong
            # structures fits only by moving theirs. A best phase that explains enough alone
            # keeps its own share as before.
            kept = cells_kept(comp.phases, pol.composed_max_strain)
            if kept or signal_explained(comp) >= pol.full_explained:
                explained, judged = comp.improvement, comp
        # Explaining a share is not enough where the scan holds little to explain: lines a few
        # degrees wide leave a 60-deg scan a dozen resolution elements, which a background and any
        # reference with a free cell fit alike (every MOF of the library explained 79-96 % of a
        # nanocrystalline Ti scan). The answer must pass the same F-test against the
        # background alone that admits a further phase (the composition's phases together where
        # they are judged together: a phase of a four-phase product explains little alone).
        significant = _against_background_p(judged, obs.y) < pol.mixture_p
        fits_ok = explained >= pol.min_explained and significant
        found, found_fit = phases, comp  # what the composition found, whether or not it explains the scan
        if not fits_ok:
            phases, comp = (), None
        # the answer is a material: its determinations' posteriors count together
        top_material = self.materials[cands[0].index]
        calibrated = rank(fits, [probs[j] for j in chosen], marginal, plain=True)
        same = sum(float(calibrated[i]) for i, j in enumerate(chosen) if self.materials[j] == top_material)
        quality = float(np.clip((explained - pol.min_explained) / (pol.full_explained - pol.min_explained), 0, 1))
        if not significant:
            quality = 0.0
        # the cell change the best fit needed enters as its prior probability relative to no change:
        # a candidate that fits only after moving its axes by many per cent is not a confident answer
        plausible = float(np.exp(-best_fit.prior / 2.0))
        confidence = float(min(same, 1.0) * quality * plausible)
        if comp is not None and (len(phases) > 1 or phases[0].index != cands[0].index):
            # The composition leads the ranking, main phase first, whichever phase the search
            # started from: every phase found is in the Top-k (one found in the residual was not
            # a fitted candidate), and a cell stretched to mimic a mixture, which backward
            # elimination dropped, no longer heads it. The confidence is at most what the
            # composition's fit and its main phase's cell change support.
            if phases[0].weight_fraction is not None:
                phases = tuple(sorted(phases, key=lambda p: -(p.weight_fraction or 0.0)))
            cands = _put_first(cands, [p.index for p in phases], [comp], probs, self.refs)
            st = next(st for st in comp.phases if st.ref.index == phases[0].index)
            comp_quality = float(np.clip((comp.improvement - pol.min_explained)
                                         / (pol.full_explained - pol.min_explained), 0, 1))
            confidence = min(confidence, comp_quality * float(np.exp(-np.sum(prior_residuals(st) ** 2) / 2.0)))
        if len(found) > 1:
            assert found_fit is not None
            # The phases reported lead already. Where nothing explains the scan as a whole (a phase
            # the library lacks, or CIFs that miss the sample's intensities), each further phase
            # the composition admitted still showed lines of its own: they follow the best fit, as
            # a search-match lists its hits, while the flags say the scan is not explained (the
            # best fit keeps the first place; no composition is reported). A product of several
            # phases may hold more than the tests could admit: the further phases tried in its
            # residual come next (candidates, not phases), ahead of single-phase fits of the whole
            # scan, which beside several phases are mostly their isostructural analogues (rutile
            # TiO2 after RuO2).
            head = ([c.index for c in cands[:len(phases)]] if fits_ok
                    else [cands[0].index, *(p.index for p in found)])
            cands = _put_first(cands, [*head, *(f.phases[-1].ref.index for f in further)],
                               [found_fit, *further], probs, self.refs)
        return Verification(cands, phases, explained, fits_ok, confidence, time.perf_counter() - t0)

    def _compose(self, fitter: Fitter, obs: Observed, first: FitResult, ranked: list[FitResult]
                 ) -> tuple[tuple[Phase, ...], FitResult, tuple[FitResult, ...]]:
        """The phases (main first), their joint fit, and the further phases tried last that were
        not admitted (each its trial fit, the phase last): the best one the tests refused first,
        then the others tried, best fit first, but none isostructural with a phase in."""
        pol = self.policy
        current = fitter.result(list(first.phases), first.shape, with_covariance=True)
        gains: list[tuple[float, float | None]] = [(current.improvement, None)]
        # a further phase is another material: a second determination of one already in is
        # isostructural with it (the overlap test would refuse it after a costly fit)
        taken = {int(self.materials[first.phases[0].ref.index])}
        further: tuple[FitResult, ...] = ()
        while len(current.phases) < pol.max_phases:
            resid = Observed(obs.two_theta, obs.y - current.linear.model + np.median(current.linear.model),
                             obs.step, obs.wavelength, obs.alpha2, obs.sigma, obs.line_fwhm)
            hits = self.index.search(resid).best(pol.second_candidates + 4)
            pool = [h for h in hits if self.refs[h.index] is not None and int(self.materials[h.index]) not in taken]
            pool = pool[: pol.second_candidates]
            for f in ranked[1:]:  # also the next well-fitting candidates of other materials
                ref = f.phases[-1].ref
                if (int(self.materials[ref.index]) not in taken and all(h.index != ref.index for h in pool)
                        and len(pool) <= pol.second_candidates):
                    pool.append(Hit(ref.index, 0.0, float(np.exp(-f.phases[-1].lnp.mean() / 2))))
            best: tuple[FitResult, float, float] | None = None
            # each further phase located cheaply first; only the best located ones are refined
            located = sorted(((fitter.locate(self.refs[h.index], h.scale, current.phases, current.shape), h)
                              for h in pool), key=lambda lh: lh[0].cost)
            judged = 0  # candidates refused as no new phase do not use up the refinements
            tried: list[FitResult] = []
            for loc, h in located:
                if judged == pol.second_refined:
                    break
                trial = fitter.fit(self.refs[h.index], fixed=current.phases, shape=current.shape, texture=False,
                                   located=loc)
                if _overlap(fitter, trial) > pol.max_overlap:
                    continue  # isostructural with a phase already in (ZIF-8 beside ZIF-67): not a new phase
                tried.append(trial)
                if trial.prior - current.prior > pol.mixture_max_strain:
                    # a minor phase that fits only with its cell stretched by 8-12 % is the model
                    # borrowing a flexible lattice to soak up misfit (PbSO4 in a real CdS scan),
                    # not an impurity of the lab's own phases
                    continue
                if _own_reflections_p(fitter, current, trial, obs.y) >= pol.mixture_p:
                    # all it gains is on the earlier phases' reflections: it re-weights them (a CIF
                    # whose intensities miss the sample's: graphite moved onto a real Mn2O3 scan's
                    # lines), it shows no reflection of its own
                    continue
                judged += 1
                gain, p = _significance(current, trial, obs.y)
                if best is None or trial.chi2 + trial.prior < best[0].chi2 + best[0].prior:
                    best = (trial, gain, p)
            if best is None or not best[1] >= pol.mixture_min_gain:
                lead = [] if best is None else [best[0]]
                others = sorted((t for t in tried if t not in lead), key=lambda t: t.chi2 + t.prior)
                further = (*lead, *others)
                break
            trial, gain, p = best
            current = fitter.result(list(trial.phases), trial.shape, with_covariance=True)
            gains.append((gain, p))
            taken.add(int(self.materials[trial.phases[-1].ref.index]))
        if len(current.phases) > 1:
            # the profile and every cell again, now that every phase is in: the profile was found
            # with the first phase alone, which broadens its peaks to cover the others' lines
            # when they are many (a four-phase product), and each later cell was fitted under it
            ph, sh = fitter.refine(list(current.phases), current.shape, list(range(len(current.phases))))
            refined = fitter.result(ph, sh, with_covariance=True)
            if refined.chi2 + refined.prior < current.chi2 + current.prior:
                current = refined
            current = _cells_restarted(fitter, current, pol.composed_max_strain)
        current, gains = _eliminate(fitter, current, gains, pol)
        if current.chi2 + current.prior > first.chi2 + first.prior:
            # elimination can drop the phase the search started from and leave one that fits worse
            # than it did alone (a real Zn-TBAPy scan, 57 % explained by its best phase): a
            # composition is never worse than the best single phase
            current = fitter.result(list(first.phases), first.shape, with_covariance=True)
            gains = [(current.improvement, None)]
        w, u = weight_fractions(current)
        return tuple(Phase(st.ref.index, st.ref.refcode, st.ref.name, w[i], u[i], gains[i][0], gains[i][1])
                     for i, st in enumerate(current.phases)), current, further


def _cells_restarted(fitter: Fitter, fit: FitResult, max_cost: float) -> FitResult:
    """``fit`` with each moved cell refined again from its reference cell, every phase free,
    where that fits better. A phase fitted alone, or before the others were in, stretches its
    cell over their lines; a local refinement with the others in keeps it there (a measured WO3
    at +2.3 / -2.2 % beside Ni(OH)2, Zr and Al2O3, which fits better at its own cell)."""
    better = fit
    for i, st in enumerate(fit.phases):
        if cells_kept([st], max_cost):
            continue
        start = list(better.phases)
        start[i] = PhaseState(st.ref, np.zeros_like(st.lnp), st.axis, st.ln_r)
        ph, sh = fitter.refine(start, better.shape, list(range(len(start))))
        trial = fitter.result(ph, sh)  # the covariance only for the fit kept
        if trial.chi2 + trial.prior < better.chi2 + better.prior:
            better = trial
    return fit if better is fit else fitter.result(list(better.phases), better.shape, with_covariance=True)


def _eliminate(fitter: Fitter, fit: FitResult, gains: list[tuple[float, float | None]], policy: VerifyPolicy
               ) -> tuple[FitResult, list[tuple[float, float | None]]]:
    """Backward elimination: while some phase, given all the others, no longer passes the test
    that admitted phases (F-test and share of the misfit removed), drop the weakest and
    re-solve the scales. Forward selection starts from the best single phase, and on a mixture
    that may be a low-symmetry cell stretched by 10 % to mimic both phases at once; once the
    true phases are in, the mimic explains nothing of its own and goes. A phase whose share of the
    diffraction signal is under ``min_share``, or whose weight fraction is under twice its
    uncertainty, goes first."""
    while len(fit.phases) > 1:
        weakest: tuple[int, float] | None = None
        w, u = weight_fractions(fit)
        share = signal_shares(fitter, fit)
        trace = [i for i in range(len(fit.phases)) if share[i] < policy.min_share
                 or (w[i] is not None and u[i] is not None and w[i] < 2.0 * u[i])]
        if trace:  # below what a laboratory scan can tell from nothing: not reported as a phase
            weakest = (min(trace, key=lambda i: share[i]), -1.0)
        for i in range(len(fit.phases)) if weakest is None else ():
            others = [st for k, st in enumerate(fit.phases) if k != i]
            reduced = fitter.result(others, fit.shape)
            gain, p = _significance(reduced, fit, fitter.obs.y, fit.phases[i].ref.n_groups + fit.columns[i])
            last = fitter.result([*others, fit.phases[i]], fit.shape)
            if _own_reflections_p(fitter, reduced, last, fitter.obs.y) < policy.mixture_p and gain >= policy.mixture_min_gain:
                continue
            if weakest is None or gain < weakest[1]:
                weakest = (i, gain)
        if weakest is None:
            break
        i = weakest[0]
        fit = fitter.result([st for k, st in enumerate(fit.phases) if k != i], fit.shape, with_covariance=True)
        gains = [g for k, g in enumerate(gains) if k != i]
    return fit, gains


def signal_shares(fitter: Fitter, fit: FitResult) -> np.ndarray:
    """Each phase's share of the phases' integrated diffraction signal in ``fit``."""
    cols, widths = fitter.columns(list(fit.phases), fit.shape)
    edges = np.cumsum([0, *widths])
    area = np.array([float(np.sum(cols[:, a:b] @ fit.linear.coef[a:b]))
                     for a, b in zip(edges[:-1], edges[1:])])
    total = float(area.sum())
    return area / total if total > 0 else np.full(len(widths), 1.0 / max(len(widths), 1))


def _earlier_profile(fitter: Fitter, fit: FitResult) -> tuple[np.ndarray, int, np.ndarray]:
    """The phases' profile columns with the background projected out, the index of the last
    phase's first column, and the earlier phases' fitted profile (their columns times scales)."""
    cols, widths = fitter.columns(list(fit.phases), fit.shape)
    q = fitter.design.q
    cols = cols - q @ (q.T @ cols)
    split = sum(widths[:-1])
    return cols, split, cols[:, :split] @ fit.linear.coef[:split]


def _overlap(fitter: Fitter, fit: FitResult) -> float:
    """Cosine between the last phase's profile and the sum of the earlier phases' (background
    removed): how much of the new phase's reflections coincide with the old ones."""
    cols, split, old = _earlier_profile(fitter, fit)
    new = cols[:, split:split + 1].sum(axis=1)
    den = float(np.linalg.norm(old) * np.linalg.norm(new))
    return float(old @ new / den) if den > 0 else 0.0


def _own_reflections_p(fitter: Fitter, before: FitResult, after: FitResult, y: np.ndarray) -> float:
    """F-test p value of the phase ``after`` adds, on the points where the phases already in
    predict less than twice the noise (the search-match rule that a phase is present only
    when lines of its own, not coinciding with the others', are observed).

    A further phase may win the whole-scan test by re-weighting the earlier phases'
    reflections alone, where the intensities of their CIFs miss the sample's; it then gains
    nothing, or loses, where only it has reflections. Same correction for the residual's
    correlation length as :func:`_significance`."""
    sigma = fitter.obs.sigma
    free = _earlier_profile(fitter, after)[2] < 2.0 * sigma
    r0 = (y - before.linear.model)[free]
    r1 = (y - after.linear.model)[free]
    c0, c1 = float(r0 @ r0) / sigma**2, float(r1 @ r1) / sigma**2
    ppe = y.size / after.n_elements
    added = after.phases[-1].ref.n_groups + after.columns[-1]
    dof = free.sum() / ppe - added
    if dof < 1.0 or c1 <= 0 or c0 <= c1:
        return 1.0
    return _f_test_p(c0, c1, added, dof, _inflation(after, y))


def correlation_length(resid: np.ndarray) -> float:
    """Integrated autocorrelation time of a residual, in points (1 for white noise): the
    initial positive sequence of its autocorrelation (Geyer 1992), summed in pairs."""
    r = resid - resid.mean()
    n = r.size
    if n < 8 or not np.any(r):
        return 1.0
    f = np.fft.rfft(r, n=2 * n)
    acf = np.fft.irfft(f * np.conj(f), n=2 * n)[:n]
    rho = acf / acf[0]
    tau = 1.0
    for k in range(1, min(n // 4, 2000) - 1, 2):
        pair = rho[k] + rho[k + 1]
        if pair <= 0:
            break
        tau += 2.0 * pair
    return float(tau)


def _significance(before: FitResult, after: FitResult, y: np.ndarray, added: int | None = None
                  ) -> tuple[float, float]:
    """(share of the misfit removed, F-test p value) for the phase ``after`` has beyond ``before``
    (its last one unless ``added``, the number of parameters it brings, is given).

    The F-test takes the residual as independent per resolution element. A measured scan's
    misfit (peak asymmetry, a profile the model lacks) is correlated over many points, and a
    flexible extra phase then soaks up whole correlated stretches: a real single-phase CdS scan
    admitted PbSO4 at p = 1e-10. So the statistic and its degrees of freedom are divided by the
    residual's correlation length in resolution elements, when that exceeds one (a synthetic
    scan's white residual leaves the test as it was)."""
    if added is None:
        added = after.phases[-1].ref.n_groups + after.columns[-1]
    gain = (before.chi2 - after.chi2) / before.chi2 if before.chi2 > 0 else 0.0
    return float(gain), _p_of_added(before.chi2, after, added, y)


def _against_background_p(fit: FitResult, y: np.ndarray) -> float:
    """F-test p value of ``fit``'s phases together against the background alone, counted as
    :func:`_significance` counts a further phase (resolution elements, the residual's correlation
    length)."""
    return _p_of_added(fit.chi2_background, fit, _phase_parameters(fit), y)


def _phase_parameters(fit: FitResult) -> int:
    """The parameters ``fit``'s phases bring: their cells' metric groups and their linear columns."""
    return sum(st.ref.n_groups for st in fit.phases) + sum(fit.columns)


def _p_of_added(chi2_before: float, after: FitResult, added: int, y: np.ndarray) -> float:
    """p of ``added`` parameters taking the misfit from ``chi2_before`` to ``after``'s, with the
    degrees of freedom ``after`` leaves (its phases' and the shared parameters counted)."""
    if after.chi2 <= 0 or chi2_before <= after.chi2:
        return 1.0
    k_after = _phase_parameters(after) + SHARED_PARAMETERS
    return _f_test_p(chi2_before, after.chi2, added, after.n_elements - k_after, _inflation(after, y))


def _inflation(fit: FitResult, y: np.ndarray) -> float:
    """The residual's correlation length in resolution elements, at least one."""
    return max(1.0, correlation_length(y - fit.linear.model) / (y.size / fit.n_elements))


def _f_test_p(chi2_before: float, chi2_after: float, added: int, dof: float, inflation: float) -> float:
    """p of the F statistic for ``added`` parameters taking the misfit from ``chi2_before`` to
    ``chi2_after`` with ``dof`` degrees of freedom left; the statistic and the degrees of freedom
    are divided by ``inflation`` (:func:`_inflation`)."""
    f = ((chi2_before - chi2_after) / added) / (chi2_after / max(dof, 1.0)) / inflation
    return float(stats.f.sf(f, added, max(dof / inflation, 1.0)))
