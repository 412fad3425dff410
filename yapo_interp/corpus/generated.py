"""Text sampled from Gemma 3 270M itself: short openings about everyday culture in each language
(:data:`SEED_PROMPTS`) continued by :class:`RestrictedSampler`, which samples over the part of
the vocabulary the other sources use (several times cheaper on a CPU than the full softmax)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from yapo_interp.errors import UserError
from yapo_interp.models import ensure_embedded_model


# Short openings about everyday culture, in each language, that the model continues. Topics
# follow the paper's (meals, greetings, weddings, holidays, games, proverbs, family, ...).
SEED_PROMPTS: dict[str, tuple[str, ...]] = {
    "english": (
        "In our family, Sunday lunch always", "The most important holiday of the year is",
        "When guests arrive at a wedding, they", "My grandmother taught me a proverb:",
        "Children in my neighbourhood like to play", "A typical breakfast here consists of",
        "The history of the old market in the city", "During the festival, people usually",
        "When you meet an elder, it is polite to", "The local football team",
        "Here is a simple recipe for", "The school year begins in",
        "My favourite song from childhood", "On the news today:", "Dear friend, I am writing to",
        "The weather this week", "Tips for travellers visiting the capital:",
        "A short story: The old fisherman", "Religion plays a role in daily life because",
        "At the end of the working day, people",
    ),
    "spanish": (
        "En mi familia, la comida del domingo siempre", "La fiesta más importante del año es",
        "Cuando los invitados llegan a una boda,", "Mi abuela me enseñó un refrán:",
        "Los niños de mi barrio suelen jugar", "Un desayuno típico aquí consiste en",
        "La historia del mercado viejo de la ciudad", "Durante las fiestas del pueblo, la gente",
        "Cuando saludas a una persona mayor, es educado", "El equipo de fútbol local",
        "Aquí tienes una receta sencilla de", "El año escolar empieza en",
        "Mi canción favorita de la infancia", "Noticias de hoy:", "Querido amigo, te escribo para",
        "El tiempo esta semana", "Consejos para viajeros que visitan la capital:",
        "Un cuento corto: El viejo pescador", "En Navidad, mi familia", "Al salir del trabajo, la gente",
    ),
    "portuguese": (
        "Na minha família, o almoço de domingo sempre", "A festa mais importante do ano é",
        "Quando os convidados chegam a um casamento,", "A minha avó ensinou-me um provérbio:",
        "As crianças do meu bairro gostam de brincar", "Um pequeno-almoço típico aqui é",
        "Um café da manhã típico no Brasil tem", "A história do mercado antigo da cidade",
        "Durante o carnaval, as pessoas", "Quando cumprimentamos uma pessoa mais velha,",
        "O time de futebol da cidade", "Aqui está uma receita simples de",
        "O ano letivo começa em", "Notícias de hoje:", "Querido amigo, escrevo-te para",
        "O tempo esta semana", "Dicas para quem visita a capital:",
        "Um conto curto: O velho pescador", "No Natal, a minha família",
        "Depois do trabalho, as pessoas",
    ),
    "arabic": (
        "في عائلتنا، غداء يوم الجمعة دائماً", "أهم عيد في السنة هو",
        "عندما يصل الضيوف إلى حفل الزفاف،", "علمتني جدتي مثلاً شعبياً:",
        "يحب الأطفال في حارتنا أن يلعبوا", "يتكون الفطور التقليدي عندنا من",
        "تاريخ السوق القديم في المدينة", "في شهر رمضان، يجتمع الناس",
        "عندما تقابل شخصاً كبيراً في السن، من الأدب أن", "فريق كرة القدم المحلي",
        "إليك وصفة بسيطة لتحضير", "يبدأ العام الدراسي في",
        "أغنيتي المفضلة منذ الطفولة", "أخبار اليوم:", "عزيزي صديقي، أكتب إليك لكي",
        "حالة الطقس هذا الأسبوع", "نصائح للمسافرين إلى العاصمة:",
        "قصة قصيرة: الصياد العجوز", "في العيد، تزور العائلات", "بعد انتهاء العمل، يذهب الناس",
    ),
    "hindi": (
        "हमारे परिवार में रविवार का खाना हमेशा", "साल का सबसे बड़ा त्योहार",
        "जब मेहमान शादी में आते हैं, तो", "मेरी दादी ने मुझे एक कहावत सिखाई:",
        "हमारे मोहल्ले के बच्चे खेलना पसंद करते हैं", "यहाँ का एक सामान्य नाश्ता",
        "शहर के पुराने बाज़ार का इतिहास", "दिवाली के दिन लोग",
        "बड़ों से मिलते समय हम", "स्थानीय क्रिकेट टीम",
        "यह रही एक आसान विधि", "स्कूल का नया साल शुरू होता है",
        "बचपन का मेरा पसंदीदा गाना", "आज की खबरें:", "प्रिय मित्र, मैं तुम्हें यह पत्र लिख रहा हूँ",
        "इस हफ़्ते का मौसम", "राजधानी घूमने वालों के लिए सुझाव:",
        "एक छोटी कहानी: बूढ़ा मछुआरा", "होली के त्योहार पर", "काम के बाद लोग",
    ),
}


def seed_prompts(language: str) -> tuple[str, ...]:
    """The openings the model continues in ``language`` (a one-line error for another)."""
    try:
        return SEED_PROMPTS[language]
    except KeyError:
        raise UserError(f"No seed prompts for language {language!r}; "
                        f"choose from {', '.join(SEED_PROMPTS)}.") from None



class RestrictedSampler:
    """Samples continuations from the embedded Gemma 3 270M over a sub-vocabulary.

    The input embedding and the (tied) unembedding are cut down to the rows of ``token_ids``;
    prompts are mapped into that index space and samples mapped back. This is exactly the
    model's next-token distribution renormalised over the kept tokens, at a fraction of the
    cost of the 262,144-way softmax.
    """

    def __init__(self, token_ids: Iterable[int], model_dir: Path | None = None):
        folder = model_dir or ensure_embedded_model()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        special = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id,
                   self.tokenizer.bos_token_id, 0, 1, 2, 106}
        kept = sorted({int(token) for token in token_ids} | {int(s) for s in special if s is not None})
        self.kept = torch.tensor(kept)
        self.to_sub = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
        self.to_sub[self.kept] = torch.arange(len(kept))
        embedding = model.get_input_embeddings()
        weight = torch.nn.Parameter(embedding.weight.data[self.kept].clone(), requires_grad=False)
        embedding.weight = weight
        embedding.num_embeddings = len(kept)
        model.lm_head.weight = weight
        model.lm_head.out_features = len(kept)
        model.config.vocab_size = len(kept)
        model.eval()
        self.model = model
        self.eos = [int(self.to_sub[i]) for i in (1, 106) if int(self.to_sub[i]) >= 0]
        self.pad = int(self.to_sub[self.tokenizer.pad_token_id])

    def sample(self, prompts: list[str], *, max_new_tokens: int, temperature: float,
               top_p: float, seed: int) -> list[str]:
        """Each prompt followed by a sampled continuation (nucleus sampling over the kept
        tokens, seeded)."""
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        ids = batch["input_ids"]
        sub_ids = self.to_sub[ids]
        unknown = sub_ids < 0
        sub_ids[unknown] = self.pad
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=sub_ids, attention_mask=batch["attention_mask"] & ~unknown,
                do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                max_new_tokens=max_new_tokens, pad_token_id=self.pad, eos_token_id=self.eos,
            )
        full = self.kept[out[:, ids.shape[1]:]]
        continuations = self.tokenizer.batch_decode(full, skip_special_tokens=True)
        return [prompt + continuation for prompt, continuation in zip(prompts, continuations)]
