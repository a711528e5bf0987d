"""Token budgets: t_ep and t_c fit every tokenizer that reads them (real tokenizers of the tiny test critics)."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from clinalign.enrich import get_preset
from clinalign.enrich.budgets import fit_prompt, text_budgets
from clinalign.enrich.config import EnrichConfig
from clinalign.enrich.render import TokenBudget, TokenLimit, token_counter_from_tokenizer, token_limit_from_tokenizer
from clinalign.toy.paths import assets_dir

LONG_CXR = {
    "devices": ["pacemaker", "PICC line", "endotracheal tube"],
    "key_findings": ["enlarged cardiac silhouette", "cardiothoracic ratio above one half", "globular heart shadow"],
    "visual_summary": "Broad globular heart shadow filling most of the lower chest with smooth, sharp borders",
}


def _n(tokenizer_dir, text: str) -> int:
    return len(AutoTokenizer.from_pretrained(tokenizer_dir)(text)["input_ids"])


def test_budget_count_is_within_limit_exactly_when_every_reader_fits():
    a = TokenLimit("a", lambda t: len(t.split()), 10)
    b = TokenLimit("b", lambda t: 2 * len(t.split()), 12)
    budget = TokenBudget([a, b])
    for words in range(0, 15):
        text = " ".join(["w"] * words)
        assert (budget.count(text) <= budget.max_tokens) == (words <= 6) == budget.fits(text)
    assert budget.binding(" ".join(["w"] * 7)) is b
    assert budget.binding("w w") is None


def test_t_ep_fits_the_smallest_of_generator_and_critic_tokenizers(tiny_siglip_dir):
    preset = get_preset("chexpert_craft_paper")
    generator_dir = assets_dir() / "base" / "tokenizer"
    critic = token_limit_from_tokenizer(str(tiny_siglip_dir))
    evaluator = token_limit_from_tokenizer(str(assets_dir() / "evaluator_critic"), role="evaluator")
    assert critic.max_tokens == 64 and evaluator.max_tokens == 77
    config = EnrichConfig(model="m", critic_tokenizers=[str(tiny_siglip_dir), str(assets_dir() / "evaluator_critic")])
    prompt_budget, checklist_budget = text_budgets(preset, config, token_counter_from_tokenizer(str(generator_dir)))
    output = preset.validate(LONG_CXR, "Cardiomegaly")
    full = preset.render(output, "Cardiomegaly", token_counter=lambda _: 0)
    assert _n(tiny_siglip_dir, full) > 64  # the tiny critic's tokenizer splits clinical words finely
    text, trimmed_by = fit_prompt(preset, output.model_dump(), "Cardiomegaly", prompt_budget)
    assert text != full and full.startswith(text.rstrip(".,"))
    assert _n(tiny_siglip_dir, text) <= 64
    assert _n(assets_dir() / "evaluator_critic", text) <= 77
    assert _n(generator_dir, text) <= 77
    # the reader the full text overshoots most is named as the one that forced the trim
    overshoot = {
        f"critic {tiny_siglip_dir}": _n(tiny_siglip_dir, full) - 64,
        f"critic {assets_dir() / 'evaluator_critic'}": _n(assets_dir() / "evaluator_critic", full) - 77,
        "generator": _n(generator_dir, full) - 77,
    }
    assert trimmed_by is not None and trimmed_by.name == max(overshoot, key=overshoot.get)
    # the longest prefix: one more word of the full text would overflow the critic
    nxt = " ".join(full.split()[: len(text.split()) + 1])
    assert _n(tiny_siglip_dir, nxt) > 64 or _n(generator_dir, nxt) > 77
    # t_c is read by the critics only: fitted to them, each attribute kept, the trimmed ones named
    fitted = preset.fit_checklist(
        "Pleural Effusion", token_counter=checklist_budget.count, max_tokens=checklist_budget.max_tokens
    )
    assert fitted.fits and _n(tiny_siglip_dir, fitted.text) <= 64
    assert fitted.trimmed_attributes
    # the tiny tokenizer needs more than one word per attribute: the last attributes go, and are reported
    kept = [a for a in preset.checklist_attributes if a not in fitted.dropped_attributes]
    assert fitted.dropped_attributes == preset.checklist_attributes[len(kept) :]
    assert all(f"{a}:" in fitted.text for a in kept) and kept


def test_enrich_run_reports_trims_by_limit(tmp_path, monkeypatch, tiny_siglip_dir):
    from enrich_fixtures import fast_config, make_records

    from clinalign.enrich import enrich
    from clinalign.enrich.testing import LoopbackServer, ScriptedResponse, chat_completion

    monkeypatch.setenv("CLINALIGN_TEST_KEY", "k")
    records = make_records(tmp_path / "img", ["Cardiomegaly", "Cardiomegaly"])

    def handle(body, number):
        return ScriptedResponse(body=chat_completion(json.dumps(LONG_CXR)))

    with LoopbackServer(handle) as server:
        config = fast_config(server.url, critic_tokenizers=[str(tiny_siglip_dir)])
        result = enrich(records, get_preset("chexpert_craft_paper"), config, tmp_path / "out")
    critic = f"critic {tiny_siglip_dir} (64 tokens)"
    assert result.trimmed == {f"t_ep: {critic}": 2, f"t_c: {critic}": 1}
    assert f"t_ep: {critic}: 2" in result.summary_table()
    rows = [json.loads(line) for line in (tmp_path / "out" / "enriched.jsonl").read_text().splitlines()]
    assert all(_n(tiny_siglip_dir, r["t_ep"]) <= 64 and _n(tiny_siglip_dir, r["t_c"]) <= 64 for r in rows)
