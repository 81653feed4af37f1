// Writes the tokenizer test corpus (tests/tokenizer/corpus/*.txt) deterministically. The output
// is committed; rerun after editing: node tests/tokenizer/oracle/make_corpus.mjs
// Cases inside a file are separated by a line "%%%%". All text here was written for this project
// or is generated from it (the code file also quotes this repository's own sources).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const outDir = path.join(root, "tests/tokenizer/corpus");
fs.mkdirSync(outDir, { recursive: true });
const SEP = "\n%%%%\n";

// Small deterministic PRNG (mulberry32).
let seed = 0x9e3779b9;
function rand() {
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (n) => Math.floor(rand() * n);

function write(name, cases) {
  const text = cases.join(SEP);
  fs.writeFileSync(path.join(outDir, name), text);
  console.log(`${name}: ${cases.length} cases, ${Buffer.byteLength(text)} bytes`);
}

// ---- English prose ----
const nouns = "engine model tensor weight kernel block scale token sentence river mountain teacher student garden window city harbour library machine question answer story morning evening winter summer friend bridge lantern compass notebook signal pattern memory planet forest island village market orchard kettle violin painter sailor doctor engineer".split(" ");
const verbs = "runs writes reads carries measures finds builds keeps breaks opens closes follows answers teaches learns moves holds turns watches remembers forgets quantizes decodes encodes compiles".split(" ");
const adjs = "quick quiet bright heavy small careful ancient modern narrow gentle curious patient crooked golden silent noisy empty crowded distant honest".split(" ");
const advs = "slowly quickly carefully rarely often almost never suddenly quietly twice".split(" ");
const names = "Alice Bob Carol Dmitri Eve Fatima Grace Hiro Ines Jamal Kofi Lena Mateo Nadia Oscar Priya".split(" ");
const openers = ["However,", "Meanwhile,", "In 1987,", "At 6:45 a.m.,", "Later that day,", "Of course,", "Still,", "On the other hand,", "Yesterday", "By the way,"];
function sentence() {
  const n = () => pick(nouns), a = () => pick(adjs);
  const forms = [
    () => `The ${a()} ${n()} ${pick(verbs)} the ${n()} ${pick(advs)}.`,
    () => `${pick(names)} said, "I'm sure the ${n()} isn't ${a()}, but we'll see."`,
    () => `${pick(openers)} ${pick(names)}'s ${n()} ${pick(verbs)} ${int(1000)} ${n()}s (about ${int(100)}.${int(100)}%).`,
    () => `Why would a ${a()} ${n()} ever ${pick(verbs).replace(/s$/, "")} a ${n()}? Nobody knows!`,
    () => `They've ${pick(verbs).replace(/s$/, "ed")} it; you'd think it'd work -- it didn't.`,
    () => `See https://example.org/${n()}/${int(99999)}?q=${n()}&page=${int(50)} or mail ${pick(names).toLowerCase()}@example.com.`,
    () => `WE'RE TOLD THE ${n().toUpperCase()} WAS ${a().toUpperCase()}; She'LL say it's THE ${n()}'S fault.`,
    () => `Price: $${int(10000)}.${String(int(100)).padStart(2, "0")}, ${int(31) + 1}/${int(12) + 1}/20${String(int(30)).padStart(2, "0")}, ${int(24)}h${int(60)}m -- ${int(1e9)} items.`,
    () => `"${a()[0].toUpperCase() + a().slice(1)}," she whispered; 'the ${n()}' — or rather the ${n()}… was gone.`,
  ];
  return pick(forms)();
}
{
  const cases = [];
  for (let p = 0; p < 700; ++p) {
    let para = "";
    const k = 2 + int(7);
    for (let s = 0; s < k; ++s) para += (s ? " " : "") + sentence();
    if (p % 7 === 3) para = "  " + para + "\n\n";
    if (p % 11 === 5) para = para.replace(/ /g, "\n");
    cases.push(para);
  }
  write("01_english.txt", cases);
}

// ---- code ----
{
  const snippets = [
`def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    a, b = 0, 1
    out = []
    for _ in range(n):
        out.append(a)
        a, b = b, a + b
    return out


if __name__ == "__main__":
    print(fibonacci(20))  # [0, 1, 1, 2, ...]
`,
`export async function fetchJson(url, { retries = 3 } = {}) {
  for (let i = 0; i < retries; ++i) {
    try {
      const res = await fetch(url);
      if (!res.ok) throw new Error(\`HTTP \${res.status}\`);
      return await res.json();
    } catch (e) {
      console.warn("retry", i, e?.message ?? e);
    }
  }
  return null;
}
`,
`fn main() {
    let words: Vec<&str> = "the quick brown fox".split_whitespace().collect();
    let lens: Vec<usize> = words.iter().map(|w| w.len()).collect();
    println!("{:?} -> {:?}", words, lens);
    match lens.iter().max() {
        Some(&m) if m > 4 => println!("long: {m}"),
        _ => {}
    }
}
`,
`package main

import (
\t"fmt"
\t"strings"
)

func main() {
\tvar sb strings.Builder
\tfor i := 0; i < 10; i++ {
\t\tfmt.Fprintf(&sb, "%02d,", i)
\t}
\tfmt.Println(strings.TrimSuffix(sb.String(), ","))
}
`,
`public final class Matrix {
    private final double[][] a;
    public Matrix(int rows, int cols) { a = new double[rows][cols]; }
    public Matrix times(Matrix b) {
        Matrix c = new Matrix(a.length, b.a[0].length);
        for (int i = 0; i < a.length; i++)
            for (int k = 0; k < b.a.length; k++)
                for (int j = 0; j < b.a[0].length; j++)
                    c.a[i][j] += a[i][k] * b.a[k][j];
        return c;
    }
}
`,
`SELECT u.id, u.name, COUNT(o.id) AS orders
FROM users u
LEFT JOIN orders o ON o.user_id = u.id AND o.created_at >= '2024-01-01'
WHERE u.email LIKE '%@example.com'
GROUP BY u.id, u.name
HAVING COUNT(o.id) > 3
ORDER BY orders DESC
LIMIT 50;
`,
`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Test &amp; page</title></head>
<body>
  <div class="card" data-id="42"><p>Hello, <b>world</b>!</p></div>
  <script>document.querySelector(".card").addEventListener("click", () => alert(1));</script>
</body>
</html>
`,
`{"name": "nibble", "version": "0.1.0", "layers": [{"kind": "linear", "shape": [4096, 14336], "dtype": "mxfp4"}], "ok": true, "ratio": 0.265625, "note": null}
`,
`#!/usr/bin/env bash
set -euo pipefail
for f in "$@"; do
  if [[ -f "$f" ]]; then
    echo "$(wc -l < "$f") lines in \${f##*/}"
  fi
done | sort -n | tail -n 5
`,
`template <typename T, size_t N>
constexpr T sum(const std::array<T, N>& xs) noexcept {
  T acc{};
  for (const auto& x : xs) acc += x;
  return acc;
}
static_assert(sum(std::array<int, 4>{1, 2, 3, 4}) == 10);
`,
  ];
  const cases = [];
  for (let r = 0; r < 12; ++r) for (const s of snippets) cases.push(r % 3 === 1 ? s.replace(/    /g, "\t") : s);
  // This repository's own sources (C++, CMake, shell).
  const own = ["src/tokenizer/bpe.cpp", "src/tokenizer/pipeline.cpp", "src/tokenizer/text.cpp", "CMakeLists.txt", "scripts/setup", "src/format/mxfp4.cpp"];
  for (const f of own) {
    const p = path.join(root, f);
    if (fs.existsSync(p)) cases.push(fs.readFileSync(p, "utf8"));
  }
  write("02_code.txt", cases);
}

// ---- many scripts ----
{
  const lines = {
    zh: ["今天的天气很好，我们去公园散步吧。", "机器学习模型需要大量的数据和计算资源。", "他说：“这本书非常有意思！”", "量化可以把模型的权重压缩到四位。", "长江是中国最长的河流，全长约六千三百公里。"],
    ja: ["東京の桜は三月の終わりに咲き始めます。", "このプログラムはＵＴＦ－８の文字列を正しく処理できますか？", "カタカナとひらがなと漢字が混ざった文章です。", "ｶﾀｶﾅの半角文字も試してみましょう。"],
    ko: ["안녕하세요, 만나서 반갑습니다.", "한국어 문장은 띄어쓰기가 중요합니다.", "서울의 겨울은 꽤 춥습니다."],
    ar: ["مرحبا بكم في هذا الاختبار البسيط.", "اللغة العربية تكتب من اليمين إلى اليسار.", "النموذج يتعلم من البيانات الكثيرة، أليس كذلك؟", "الرقم ١٢٣٤٥ مكتوب بالأرقام العربية الشرقية."],
    hi: ["नमस्ते, आप कैसे हैं?", "हिंदी देवनागरी लिपि में लिखी जाती है।", "यह मॉडल बहुत तेज़ी से काम करता है।", "संख्या १२३ और 456 दोनों।"],
    ru: ["Съешь же ещё этих мягких французских булок, да выпей чаю.", "Москва — столица России.", "ПРИВЕТ, мир! Как дела?"],
    el: ["Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.", "Ελληνικά: αβγδεζηθ ΑΒΓΔΕΖΗΘ."],
    he: ["שלום עולם, זהו מבחן.", "עברית נכתבת מימין לשמאל."],
    th: ["ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ", "สวัสดีครับ ยินดีต้อนรับ"],
    vi: ["Tiếng Việt có rất nhiều dấu thanh: à á ả ã ạ.", "Hà Nội là thủ đô của Việt Nam."],
    mixed: ["naïve café résumé coöperate façade jalapeño Zürich Ærøskøbing", "e\u0301 a\u0300 n\u0303 (combining marks) vs é à ñ", "ﬁ ﬂ ＡＢＣ ① ⅫⅣ ㎏ ㍻ (compatibility forms)", "straße STRASSE ǅemal ǈ ǋ İstanbul ıi", "Ω≈ç√∫˜µ≤≥÷ ∀x∈ℝ: x²≥0 → ∑ᵢ aᵢ", "·•–—‘’“”„‹›«» … ¡¿ § ¶ † ‡ ‰ ′ ″"],
  };
  const all = Object.values(lines).flat();
  const cases = [];
  for (const [lang, ls] of Object.entries(lines)) cases.push(ls.join("\n"));
  for (let i = 0; i < 900; ++i) {
    let s = "";
    const k = 1 + int(6);
    for (let j = 0; j < k; ++j) s += pick(all) + pick([" ", "", "\n", "  ", " 2024 ", ", "]);
    cases.push(s);
  }
  write("03_scripts.txt", cases);
}

// ---- emoji ----
{
  const emoji = ["😀", "😂", "🥲", "🤖", "🧠", "🚀", "🔥", "✅", "❌", "⭐", "❤️", "♥", "☕", "👍", "👍🏽", "👋🏿", "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏾‍🚀", "👨‍❤️‍💋‍👨", "🏳️‍🌈", "🏴‍☠️", "🇯🇵", "🇺🇸", "🇩🇪", "🇧🇷", "1️⃣", "#️⃣", "©️", "™", "🫠", "🪐", "🐈‍⬛", "🐻‍❄️", "😶‍🌫️", "❤️‍🔥"];
  const cases = [emoji.join(""), emoji.join(" "), emoji.join("\n")];
  for (let i = 0; i < 600; ++i) {
    let s = "";
    const k = 1 + int(12);
    for (let j = 0; j < k; ++j) s += pick([pick(emoji), pick(emoji) + pick(emoji), " " + pick(nouns), pick(emoji) + " ", "!", "?!", "\n"]);
    cases.push(s);
  }
  write("04_emoji.txt", cases);
}

// ---- whitespace and digit runs ----
{
  const cases = [];
  const ws = [" ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\r", "\v", "\f"];
  for (const n of [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 64, 100, 257, 1000, 4097]) {
    cases.push(" ".repeat(n));
    cases.push("x" + " ".repeat(n) + "y");
    cases.push("\n".repeat(n));
    cases.push("\t".repeat(n) + "z");
    cases.push("9".repeat(n));
    cases.push("a" + "1234567890".repeat(Math.ceil(n / 10)).slice(0, n) + "b");
    cases.push(" " + "0".repeat(n) + " ");
  }
  for (let i = 0; i < 500; ++i) {
    let s = "";
    const k = 1 + int(10);
    for (let j = 0; j < k; ++j) {
      const r = int(5);
      if (r === 0) s += pick(ws).repeat(1 + int(40));
      else if (r === 1) s += String(int(1e9)) + String(int(1e9));
      else if (r === 2) s += pick(nouns);
      else if (r === 3) s += pick([".", ",", "...", "!!", "--", "''", "\"", "(", ")", "[", "]", "{}", "/", "\\", "@", "#"]);
      else s += pick(ws);
    }
    cases.push(s);
  }
  write("05_whitespace_digits.txt", cases);
}

// ---- special-token spellings inside text ----
{
  const specials = ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|reserved_special_token_5|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>", "<|call|>", "<|constrain|>", "<|startoftext|>",
    "<|reserved_200017|>", "<|endofprompt|>"];
  const near = ["<|im_sta", "im_end|>", "<|<|im_end|>|>", "<<s>>", "< s>", "<S>", "<|END|>", "<|eot_id", "<|start|><|start|>", "</s></s>"];
  const cases = [specials.join(""), specials.join(" "), near.join(" ")];
  for (let i = 0; i < 600; ++i) {
    let s = "";
    const k = 1 + int(8);
    for (let j = 0; j < k; ++j) s += pick([pick(specials), pick(specials), pick(near), " ", "\n", sentence(), pick(nouns), "  "]);
    cases.push(s);
  }
  write("06_special.txt", cases);
}

// ---- empty and one-character inputs ----
{
  const cases = ["", " ", "  ", "\n", "\t", "a", "Z", "0", ".", "'", "\"", "<", "|", ">", "é", "中", "😀", "\u00a0", "\u200d", "\ufe0f", "\u0301", "▁", "Ġ", "s", "'s", "I", "\u2028"];
  write("00_edge.txt", cases.concat(cases.map((c) => c + c)));
}
