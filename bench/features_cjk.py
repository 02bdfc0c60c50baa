"""Serving latency of features and of one routing prediction, English beside CJK.

Chinese and Japanese are tokenised differently from space-separated text (each
character a unigram, neighbours bigrams; CJK keyword phrases; see
`router.features`), so their cost is measured on its own. Prints p50/p99 of
`FeatureExtractor.transform`, `embed`, `transform_with_tfidf` and
`QualityModel.predict` (1 conversation x 8 models) for a ~1,000-token English
conversation and a 4,000-character Chinese/Japanese one, in the same run and
with the same fitted model. The model is fitted on the demo table where a third
of the prompts are replaced by Chinese or Japanese prompts of the same task (and
the same outcomes), so CJK buckets are as present in the artifact as they would
be for mixed traffic. 4,000 CJK characters are 1,000 tokens by the router's own
estimate (4 characters a token); real tokenisers give about a token per Han
character, so this is more text than a real 1,000-token CJK prompt: a worst case.

Same table format as bench/features.py (which measures English only, beside the
sklearn pipeline and generic-glue baselines).

Run: python bench/features_cjk.py [--repeats N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from features import percentiles  # bench/ is on sys.path when run as a script

from router.catalog import load_catalog
from router.conversation import Conversation

# Chinese / Japanese prompts per demo task: templates x topics.
CJK_TASKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coding": (("请用Python写一个{}的函数，并解释它的时间复杂度。",
                "我的程序在{}时报错了，帮我调试这段代码。",
                "{}を実装する関数を書いてください。"),
               ("快速排序", "二叉树遍历", "读取文件", "链表反转", "字符串匹配", "哈希表")),
    "creative_writing": (("写一首关于{}的诗，要有古典的风格。", "以{}为题写一个短故事。",
                          "{}についての俳句を書いてください。"),
                         ("秋天的落叶", "明月", "江南春雨", "故乡", "大海", "梅花")),
    "math": (("{}个苹果平均分给三个人，每人分到多少？", "次の方程式を解きなさい：x + {} = 22。",
              "一个三角形的底是{}厘米，高是8厘米，面积是多少？"),
             ("12", "27", "45", "63", "81", "96")),
    "reasoning": (("为什么{}？请一步一步地推理。",
                   "{}について、その理由を論理的に説明してください。"),
                  ("天空是蓝色的", "冬天白天更短", "铁会生锈", "物价会上涨", "鸟能飞",
                   "潮汐会变化")),
    "factual_qa": (("{}是什么时候发生的？", "请介绍一下{}的历史。"),
                   ("工业革命", "丝绸之路", "明治维新", "文艺复兴", "唐朝", "冷战")),
    "extraction": (("从下面的文本中提取所有的{}：张三于三月五日支付了五千元。",
                    "次の文章から{}を抽出してください。"),
                   ("人名", "日期", "金额", "地名", "公司名称", "电话号码")),
    "classification": (("请把这条关于{}的客户留言分类：账单、故障或其他。",
                        "この{}に関するレビューの感情を分類してください。"),
                       ("会员积分", "退款", "快递延误", "登录失败", "价格", "服务态度")),
    "summarisation": (("请总结下面这篇关于{}的报告的要点，保留所有数字。",
                       "{}についての記事を三行で要約してください。"),
                      ("包裹延误", "季度销售", "项目进度", "用户调研", "安全事故", "市场趋势")),
    "translation": (("把这句话翻译成英文：{}。", "次の文を中国語に翻訳してください：{}。"),
                    ("早上好，你好吗", "猫在垫子上睡觉", "明天会下雨", "我喜欢读书", "会议推迟了",
                     "谢谢你的帮助")),
}


def _cjk_prompt(task: str, i: int) -> str:
    templates, topics = CJK_TASKS[task]
    return templates[i % len(templates)].format(topics[(i // len(templates)) % len(topics)])


def _long(texts: list[str], chars: int = 4000) -> str:
    out, i = "", 0
    while len(out) < chars:
        out += texts[i % len(texts)] + "\n"
        i += 1
    return out[:chars]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--train-prompts", type=int, default=3000)
    args = parser.parse_args()

    from router.predictor import QualityModel
    from training.data import load_outcomes, write_outcomes
    from training.demo_data import generate_demo

    catalog = load_catalog()
    demo = generate_demo(args.train_prompts, 0, catalog)
    ids = demo["prompt_id"].unique()
    cjk_ids = set(ids[::3])
    tasks = demo.drop_duplicates("prompt_id").set_index("prompt_id")["task"]
    cjk_text = {pid: f"{_cjk_prompt(tasks[pid], n)}（{n}）"
                for n, pid in enumerate(sorted(cjk_ids))}
    mask = demo["prompt_id"].isin(cjk_ids)
    demo.loc[mask, "prompt"] = demo.loc[mask, "prompt_id"].map(cjk_text)
    with tempfile.TemporaryDirectory() as tmp:
        table = load_outcomes(write_outcomes(demo, Path(tmp) / "demo.csv"), catalog=catalog)

    english = [t for pid, t in zip(demo["prompt_id"], demo["prompt"], strict=True)
               if pid not in cjk_ids]
    english = list(dict.fromkeys(english))
    cjk = [_cjk_prompt(task, i) for task in CJK_TASKS for i in range(18)]
    cjk = [cjk[(7 * i) % len(cjk)] for i in range(len(cjk))]  # mix the tasks
    requests = {"English": Conversation.from_prompt(_long(english)),
                "CJK": Conversation.from_prompt(_long(cjk))}
    for name, conv in requests.items():
        print(f"{name} request: {len(conv.last_user)} chars, {conv.input_tokens} tokens")
    model = QualityModel().fit(table, catalog=catalog)
    fe = model.features_
    m = len(model.models_)
    print(f"fitted on {len(ids)} demo prompts, {len(cjk_ids)} of them Chinese/Japanese")

    rows = []
    for name, conv in requests.items():
        rows += [
            (f"FeatureExtractor.transform, 1 conversation, {name}",
             percentiles(lambda c=conv: fe.transform([c]), args.repeats)),
            (f"FeatureExtractor.embed, 1 conversation, {name}",
             percentiles(lambda c=conv: fe.embed([c]), args.repeats)),
            (f"features alone (transform_with_tfidf), {name}",
             percentiles(lambda c=conv: fe.transform_with_tfidf([c]), args.repeats)),
            (f"QualityModel.predict, 1 x {m} models, {name}",
             percentiles(lambda c=conv: model.predict([c]), args.repeats)),
        ]
    print(f"{'measurement':58s} {'p50 ms':>8s} {'p99 ms':>8s}")
    for name, (p50, p99) in rows:
        print(f"{name:58s} {p50:8.3f} {p99:8.3f}")


if __name__ == "__main__":
    main()
