"""Clean text and junk in English, Chinese and Japanese for the data tests. The Chinese prose quotes the
Analects (public domain); the rest was written for these tests."""

EN_CLEAN = (
    "The ferry left the harbour a little after seven, when the fog was still lying on the water. Most of the "
    "passengers stayed inside with their coffee, but an old man in a grey coat stood at the rail and watched "
    "the gulls follow the wake. He had made this crossing every week for thirty years, first to sell fish and "
    "later to visit his sister, who kept a small bakery near the church on the island.\n\n"
    "When the engines slowed, he could already smell bread. The town was waking up: shutters opened, a dog "
    "barked at a delivery van, and two children ran down the hill with their school bags bouncing behind them. "
    "His sister waved from the doorway. She had saved him a loaf, as she always did, and she wanted to hear "
    "whether the doctor had said anything new about his knee. Nothing much, he told her, and that was good news."
)

ZH_CLASSICAL = (
    "子曰：学而时习之，不亦说乎？有朋自远方来，不亦乐乎？人不知而不愠，不亦君子乎？\n"
    "有子曰：其为人也孝弟，而好犯上者，鲜矣；不好犯上，而好作乱者，未之有也。君子务本，本立而道生。孝弟也者，其为仁之本与！\n"
    "曾子曰：吾日三省吾身：为人谋而不忠乎？与朋友交而不信乎？传不习乎？"
)

ZH_CLEAN = (
    "周末的早上，我和朋友一起去城外的山上散步。天气很好，路边的树叶已经开始变黄了。"
    "我们一边走一边聊天，说起了小时候在老家的生活。那时候村子里没有公路，去镇上买东西要走一个多小时。\n"
    "现在交通方便了，可是很多年轻人都去了城市，村子里只剩下一些老人。中午我们在山顶的小饭馆吃了面条，"
    "老板是一位很热情的阿姨，她告诉我们，这家店已经开了二十多年。\n"
    "下山的时候，太阳慢慢落下去，我们都觉得这一天过得很有意义。"
)

ZH_ENUMERATION = (  # clean prose holding one list sentence of short items
    "这个夏天我们去了很多地方。北京、上海、广州、深圳、杭州、南京、成都、西安，每个城市都有自己的味道。"
    "在北京，我们看了故宫和长城，也在胡同里吃了炸酱面。在上海，我们沿着外滩走到很晚，看江边的灯一盏一盏亮起来。\n"
    "回家以后，妈妈问我最喜欢哪里。我想了很久，还是觉得西安最好，因为那里的历史让我觉得自己离古人很近。"
)

ZH_KEYWORD_LIST = "\n".join([  # SEO keyword lists: short bare items between commas, line after line
    "免费下载，高清电影，在线观看，最新电影，破解版，手机版，官方网站，百度云，全集",
    "北京搬家公司，北京搬家，搬家公司电话，北京搬家公司哪家好，长途搬家，搬家价格，公司搬迁。",
    "热门排行榜、免费下载、高清电影、在线观看、最新、手机版、优惠、注册送、彩票",
    "二手车，二手车交易市场，二手车报价，二手车之家，二手车评估，二手车过户，个人二手车出售",
] * 4)

JA_CLEAN = (
    "朝の駅はいつもより静かだった。雨が降り始めたので、多くの人は傘を持って急いでいた。"
    "私は売店で温かいお茶を買い、ホームのベンチに座って電車を待った。\n"
    "向かいの席では、小さな男の子が窓の外を見ながら、母親に電車の名前を一つずつ教えていた。"
    "母親は笑いながら、その話を最後まで聞いていた。\n"
    "やがて電車が到着し、私たちは同じ車両に乗った。窓の外には、濡れた屋根と灰色の空がゆっくりと流れていった。"
    "会社に着くまでの三十分、私は本を読むのをやめて、その景色をただ眺めていた。"
)

JUNK = {
    "zh": {
        "repeated_lines": ZH_CLEAN.split("\n")[0] + "\n" + "\n".join(["点击这里免费领取大奖，名额有限！"] * 12),
        "symbol_soup": "\n".join(["★★★ ◆◆ ### @@@ 123 ※※ →→ 优惠 ★☆★ ■□■ 888 ###"] * 3
                                 + ["◆ 特价 ◆ ★ 999 ★ ※ 热卖 ※ ### 送 ###", "→→→ 点击 ←←← ★★★★★ 100% ★★★★★"] * 4),
        "keyword_spam": "\n".join(["免费下载高清电影在线观看最新电影破解版手机版官方网站彩票注册送百度云无删减全集",
                                   "热门排行榜免费下载在线观看高清电影最新破解版手机版彩票注册送官方网站全集",
                                   "在线观看免费下载最新电影高清电影无删减破解版手机版排行榜彩票注册送优惠。"] * 6),
    },
    "ja": {
        "repeated_lines": JA_CLEAN.split("\n")[0] + "\n" + "\n".join(["今すぐ無料でダウンロードしてください！"] * 12),
        "symbol_soup": "\n".join(["★★★ ◆◆ ### @@@ 123 ※※ →→ 激安 ★☆★ ■□■ 888 ###"] * 3
                                 + ["◆ 特価 ◆ ★ 999 ★ ※ 送料無料 ※ ### 限定 ###", "→→→ クリック ←←← ★★★★★ 100% ★★★★★"] * 4),
        "keyword_spam": "\n".join(["激安通販最安値送料無料人気ランキング新作限定セール即日発送公式サイト格安販売中古買取査定",
                                   "人気ランキング激安通販送料無料最安値公式サイト新作限定セール格安販売即日発送中古買取",
                                   "最安値激安通販新作人気ランキング送料無料限定セール公式サイト即日発送格安販売中古買取。"] * 6),
    },
    "en": {
        "repeated_lines": EN_CLEAN.split("\n")[0] + "\n" + "\n".join(["Click here to claim your free prize now!"] * 12),
        "symbol_soup": "\n".join(["*** ### @@@ 123 >>> <<< $$$ 888 ### !!! ~~~ |||"] * 3
                                 + ["### SALE ### *** 999 *** >>> HOT <<<", "=> CLICK <= ***** 100% *****"] * 4),
        "keyword_spam": "\n".join(["cheap watches buy online best price free shipping replica discount deal top brand",
                                   "best price cheap watches replica discount free shipping buy online top deal brand",
                                   "free shipping replica watches cheap discount best deal buy online top price."] * 6),
    },
}
