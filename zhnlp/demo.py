"""Small, deterministic demo corpora in the official CLUE, Ape210K and LCCC formats.

The demo corpora let the whole pipeline (tokenizer, tiny BERT pretraining,
finetuning) run end to end in minutes on a laptop and still show real learning:
every label follows from its text, every equation from its problem and every
reply from its context, with enough lexical variety that a tiny model must
generalise rather than memorise.

Everything is drawn from ``random.Random`` streams derived from ``seed`` (one
stream per corpus), so the same seed always gives byte-identical files.

Layout written by :func:`write_demo_corpora` (row counts at ``scale=1``; ``scale``
multiplies every count, with a floor of ``MIN_ROWS`` rows per file)::

    clue/tnews, iflytek, ocnli, csl, cluewsc   FewCLUE layout
        train_few_all.json 240, dev_few_all.json 80, test_public.json 80 (labelled),
        test.json 40 (unlabelled: id and text fields only); tnews also has labels.json
    clue/afqmc, cmnli                          CLUE layout
        train.json 320, dev.json 100, test.json 40 (unlabelled, with id)
    ape210k/{train,valid,test}.ape.json        1500 / 150 / 150
    lccc/dialogues.json                        {"train": 800, "valid": 100, "test": 100}
    lccc/{train,valid,test}.txt                the same dialogues, one per line

Deliberate defects, planted to exercise the cleaning and filtering rules:

* Ape210K: in every split of ``n`` rows, exactly the rows at 0-based positions
  ``n // 3`` and ``2 * n // 3`` (see :func:`ape_mismatch_positions`) carry an
  ``ans`` equal to the true value of their equation plus 1, so the
  "equation must evaluate to ans" filter drops exactly two rows per split.
  Every other row's ``ans`` equals its equation exactly.
* LCCC: every split contains exactly two dialogues that are exact copies of
  another dialogue of the same split, and exactly one dialogue with an empty
  turn (``""``; in the text files, two adjacent tabs). Apart from these, all
  dialogues are distinct across the three splits.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------
# Sizes (rows at scale 1.0)
# ---------------------------------------------------------------------------

FEWCLUE_SIZES = {"train_few_all.json": 240, "dev_few_all.json": 80, "test_public.json": 80, "test.json": 40}
CLUE_SIZES = {"train.json": 320, "dev.json": 100, "test.json": 40}
APE_SIZES = {"train": 1500, "valid": 150, "test": 150}
LCCC_SIZES = {"train": 800, "valid": 100, "test": 100}
MIN_ROWS = 8  # floor per file, whatever the scale

# ---------------------------------------------------------------------------
# Shared word lists
# ---------------------------------------------------------------------------

CITIES = ["北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安", "南京", "重庆",
          "长沙", "厦门", "青岛", "昆明", "苏州", "天津", "大连", "哈尔滨", "郑州", "桂林"]
PERSONS = ["小王", "老张", "李阿姨", "我的同事", "他姐姐", "小刘", "陈老师", "王先生", "这位顾客",
           "张大爷", "小赵", "她表哥", "林经理", "周同学", "我邻居"]
WHEN = ["昨天", "上周末", "今天上午", "前天下午", "上个月", "昨天晚上", "今天早上", "周三"]
NUM_WORDS = ["两", "三", "四", "五", "六", "八", "十"]
FOODS = ["火锅", "饺子", "烤鸭", "拉面", "小龙虾", "麻辣烫", "烧烤", "米粉", "包子", "寿司",
         "披萨", "煎饼", "牛肉面", "酸菜鱼", "炸鸡", "馄饨"]
TIMES = ["早上八点", "九点", "十点半", "中午十二点", "下午两点", "下午三点", "四点半", "傍晚六点",
         "晚上七点", "晚上八点"]
PLACES = ["学校", "地铁站", "商场", "公园", "图书馆", "电影院", "咖啡店", "公司", "体育馆", "火车站"]

# ---------------------------------------------------------------------------
# TNEWS: 6 of the 15 real labels; topic words decide the label
# ---------------------------------------------------------------------------

TNEWS_LABELS = [  # (label, label_desc, label_zh, topic words)
    (101, "news_culture", "文化", ["博物馆", "非遗文化", "书法家", "国画", "古籍", "古诗词", "文物", "戏曲",
                                   "京剧", "民俗文化", "传统文化", "文学奖", "故宫", "敦煌壁画", "话剧",
                                   "昆曲", "古建筑", "老字号", "作家", "文化遗产"]),
    (102, "news_entertainment", "娱乐", ["明星", "综艺节目", "电视剧", "演唱会", "电影票房", "导演",
                                         "女演员", "偶像", "明星粉丝", "颁奖典礼", "新专辑", "热播剧",
                                         "真人秀", "歌手", "电影节", "剧组", "影视公司", "红毯", "演员片酬",
                                         "男主角"]),
    (103, "news_sports", "体育", ["足球", "篮球赛", "国足", "世界杯", "奥运会", "总决赛", "球员", "主教练",
                                  "中超联赛", "联赛", "进球", "乒乓球", "马拉松", "女排", "羽毛球",
                                  "球员转会", "主场比赛", "金牌", "游泳队", "冠军赛"]),
    (104, "news_finance", "财经", ["银行", "央行", "贷款利率", "金融市场", "通胀", "经济数据", "人民币",
                                   "汇率", "消费金融", "投资", "企业营收", "财报", "债券", "降准",
                                   "保险公司", "银行理财", "融资", "外贸", "税收", "金融监管"]),
    (107, "news_car", "汽车", ["新能源车", "轿车", "发动机", "油耗", "续航", "车主", "变速箱", "底盘",
                               "电动车", "新车型", "试驾", "提车", "汽车保养", "轮胎", "排量", "混动车",
                               "车展", "驾驶", "越野车", "充电桩"]),
    (109, "news_tech", "科技", ["手机", "芯片", "人工智能", "5G网络", "互联网", "处理器", "智能屏幕",
                                "操作系统", "机器人", "算法", "大数据", "云计算", "折叠屏手机", "卫星",
                                "软件", "程序员", "量子计算", "电池技术", "智能手表", "科学家"]),
]
TNEWS_TEMPLATES = [
    "{A}又出新消息，{B}引发网友热议",
    "为什么{A}越来越受关注？答案在这里",
    "{A}和{B}，你更看好哪一个？",
    "{place}{A}迎来新变化，{B}值得关注",
    "关于{A}的{n}个冷知识，最后一个没想到",
    "{A}：{B}背后的故事",
    "{year}年{A}盘点：{B}表现抢眼",
    "专家解读{A}，{B}将走向何方",
    "{A}火了！{B}成为最大赢家",
    "看完你就懂了：{A}与{B}的区别",
    "{place}的{A}，让人想起当年的{B}",
    "{A}遇冷，{B}却逆势增长",
    "盘点那些年的{A}，你还记得{B}吗",
    "{B}爆出猛料，{A}再次登上热搜",
    "一文读懂{A}",
]
TNEWS_YEARS = ["2018", "2019", "2020", "2021"]
TNEWS_TAILS = ["，{C}也来了", "丨{C}", "（附{C}）", "，网友：{C}怎么看", "，{C}成焦点"]

# ---------------------------------------------------------------------------
# IFLYTEK: 8 of the 119 real app categories (id and name as in the real data)
# ---------------------------------------------------------------------------

IFLYTEK_LABELS = [  # (label, label_des, app-name stem, category phrases)
    (0, "打车", "出行", ["一键叫车", "快车专车随心选", "司机快速接单", "实时查看车辆位置", "顺风车拼车",
                       "车费透明", "设置上车地点", "出租车随叫随到", "夜间代驾", "行程分享给家人"]),
    (1, "地图导航", "导航", ["实时路况", "语音导航", "路线规划", "离线地图", "步行导航", "周边搜索",
                           "精准定位", "躲避拥堵", "卫星地图", "公交换乘方案"]),
    (10, "社区服务", "社区", ["物业缴费", "智能门禁", "在线报修", "小区公告", "邻里互助", "家政预约",
                            "快递代收", "停车缴费", "社区活动报名", "水电燃气缴费"]),
    (36, "小说", "书城", ["海量小说免费阅读", "玄幻言情都市", "章节实时更新", "书架同步", "追书提醒",
                         "热门网文", "作者大神连载", "听书模式", "夜间阅读模式", "排行榜好书推荐"]),
    (48, "音乐", "音乐", ["在线听歌", "精选歌单", "无损音质", "滚动歌词", "新歌排行榜", "歌手专区",
                         "下载歌曲离线听", "单曲循环", "新歌首发", "每日推荐歌曲"]),
    (88, "菜谱", "美食", ["家常菜做法", "食材搭配", "详细烹饪步骤", "烘焙甜点", "下厨房", "菜谱大全",
                         "营养搭配", "视频教你做菜", "厨房小技巧", "今天吃什么"]),
    (96, "理财", "理财", ["基金定投", "稳健收益", "理财产品", "资产配置", "定期理财", "年化收益率",
                         "风险评估", "零钱存取", "账户资金安全", "收益每日更新"]),
    (113, "办公", "办公", ["在线文档", "表格协作", "视频会议", "考勤打卡", "审批流程", "团队协作",
                          "企业通讯录", "日程提醒", "云端同步文件", "移动办公"]),
]
IFLYTEK_NAME_PREFIX = ["快", "小", "乐", "易", "掌上", "智慧", "悦", "趣", "云", "随心", "全民", "口袋"]
IFLYTEK_GENERIC_STEMS = ["生活", "天天", "优选", "星球", "空间", "工具"]
IFLYTEK_NAME_SUFFIX = ["宝", "通", "助手", "大全", "管家", "", "达人", "家"]
IFLYTEK_OPENERS = [
    "{name}是一款专业的{stem}应用，{p1}、{p2}，{p3}。",
    "{name}，{p1}，{p2}，让生活更简单。主要功能：{p3}。",
    "欢迎使用{name}！我们为您提供{p1}和{p2}服务，还支持{p3}。",
    "{name}专注{stem}服务，{p1}，{p2}。特色功能{p3}，一用就上手。",
]
IFLYTEK_MIDDLES = ["另外还有{p4}。", "新增{p4}功能。", "{p4}，随时随地。", "", "支持{p4}。"]
IFLYTEK_GENERIC = ["界面简洁，操作方便。", "为您提供贴心服务。", "全新版本上线，欢迎下载体验。",
                   "支持安卓和苹果系统。", "用户数量已突破一千万。", "", "客服全天在线。"]
IFLYTEK_UPDATES = ["更新内容：修复已知问题，优化用户体验。", "更新内容1、修复已知bug", "",
                   "更新内容：提升稳定性。", "修复了一些已知问题"]

# ---------------------------------------------------------------------------
# AFQMC: product x intent questions; paraphrases share the intent
# ---------------------------------------------------------------------------

AFQMC_INTENTS = {
    "repay": ["{p}怎么还款", "{p}的钱要怎么还", "如何还{p}的款", "{p}在哪里还钱", "{p}还款方式有哪些"],
    "open": ["{p}怎么开通", "怎样才能开通{p}", "我想开通{p}怎么操作", "开通{p}需要什么条件", "{p}在哪开通"],
    "limit": ["{p}额度怎么提高", "怎么提升{p}的额度", "{p}可以提额吗", "如何增加{p}额度", "{p}额度太低了怎么提"],
    "overdue": ["{p}逾期了会怎么样", "{p}逾期有什么后果", "{p}逾期几天有影响吗", "{p}过了还款日没还会怎样"],
    "close": ["{p}怎么关闭", "如何关闭{p}", "我不想用{p}了怎么关掉", "{p}可以关掉吗", "关闭{p}在哪里操作"],
    "interest": ["{p}利息怎么算", "{p}的利息是多少", "用{p}要收利息吗", "{p}怎么计算利息"],
    "installment": ["{p}可以分期吗", "{p}怎么分期还", "{p}能不能分期付款", "{p}分期手续费多少"],
    "frozen": ["{p}为什么用不了", "我的{p}怎么不能用了", "{p}突然不能使用了", "{p}用不了是什么原因"],
    "withdraw": ["{p}的钱怎么转出来", "如何把{p}里的钱转到银行卡", "{p}转出要多久到账", "{p}里的钱怎么提现"],
    "earnings": ["{p}收益怎么算", "{p}每天有多少收益", "{p}的收益什么时候到账", "为什么{p}今天没有收益"],
}
_CREDIT = ["repay", "open", "limit", "overdue", "close", "interest", "installment", "frozen"]
AFQMC_PRODUCTS = {  # product -> the intents that make sense for it
    "花呗": _CREDIT, "借呗": _CREDIT, "信用卡": _CREDIT, "网商贷": _CREDIT, "备用金": _CREDIT,
    "余额宝": ["open", "close", "frozen", "withdraw", "earnings"],
}
AFQMC_PREFIX = ["", "", "请问", "请问一下", "你好，", "我想问下"]
AFQMC_SUFFIX = ["", "", "？", "呢", "啊"]

# ---------------------------------------------------------------------------
# OCNLI / CMNLI: premise frames with one hypothesis family per label
# ---------------------------------------------------------------------------

NLI_GOODS = [("苹果", "斤", "水果"), ("香蕉", "斤", "水果"), ("橙子", "斤", "水果"), ("白菜", "棵", "蔬菜"),
             ("西红柿", "斤", "蔬菜"), ("土豆", "斤", "蔬菜"), ("衬衫", "件", "衣服"), ("裙子", "条", "衣服"),
             ("外套", "件", "衣服"), ("牛奶", "箱", "饮料"), ("果汁", "瓶", "饮料"), ("铅笔", "支", "文具")]
NLI_SHOPS = ["超市", "菜市场", "商场", "小卖部", "便利店"]
NLI_PARKS = ["公园", "操场", "湖边", "河边", "小区", "体育场"]
NLI_VEHICLES = ["火车", "飞机", "大巴", "高铁", "轮船"]
NLI_TOPICS = ["环境保护", "垃圾分类", "交通安全", "节约用水", "员工培训", "产品质量", "防汛工作", "食品安全"]
NLI_ORGS = ["市政府", "学校", "公司", "街道办", "工厂", "医院", "村委会"]
NLI_BOOK_TOPICS = ["历史", "天文", "植物", "音乐", "经济", "心理学", "旅行", "烹饪"]
NLI_FRAMES = {
    "shop": {
        "premise": ["{who}{when}在{shop}买了{num}{unit}{obj}", "{when}{who}去{shop}买了{num}{unit}{obj}，花了不少钱"],
        "entailment": ["{who}{when}买了一些{cat}", "{who}{when}去过{shop}", "有人在{shop}买了{obj}",
                       "{who}买过{obj}"],
        "contradiction": ["{who}{when}没有去过{shop}", "{who}{when}什么东西都没买", "{who}从来不买{cat}",
                          "{who}{when}一直待在家里没出门", "{who}{when}在{shop}只买了{obj2}"],
        "neutral": ["{who}是和朋友一起去的{shop}", "{shop}的{obj}最近在打折", "{who}买{obj}是为了送给家人",
                    "{who}{when}心情特别好", "{who}不太喜欢去{shop}"],
    },
    "travel": {
        "premise": ["{who}{when}坐{vehicle}去了{city}", "{when}{who}乘{vehicle}到了{city}"],
        "entailment": ["{who}{when}出过远门", "{who}去过{city}", "{who}{when}离开过家", "{who}坐过{vehicle}"],
        "contradiction": ["{who}{when}一直待在家里", "{who}从来没有去过{city}", "{who}{when}没有出门",
                          "{who}{when}哪儿也没去", "{who}{when}是坐{vehicle2}去的{city}"],
        "neutral": ["{who}在{city}有很多朋友", "{who}这次去{city}是为了出差", "{city}{when}下了一场大雨",
                    "{who}很喜欢坐{vehicle}", "{who}以前没去过{city}"],
    },
    "sport": {
        "premise": ["{who}{when}在{park}跑了{num}公里", "{when}{who}绕着{park}跑了{num}公里"],
        "entailment": ["{who}{when}运动过", "{who}{when}跑了步", "{who}去过{park}", "有人在{park}跑步"],
        "contradiction": ["{who}{when}没有运动", "{who}{when}整天都在睡觉", "{who}{when}没有去过{park}",
                          "{who}从来不跑步"],
        "neutral": ["{who}正在准备参加马拉松比赛", "{who}每天都会去{park}", "{park}{when}人特别多",
                    "{who}跑完步吃了{food}", "{who}平时不怎么运动"],
    },
    "meeting": {
        "premise": ["{org}{when}召开了关于{topic}的会议", "{when}{org}专门开会讨论了{topic}问题"],
        "entailment": ["{org}开过会", "有人讨论了{topic}", "{org}{when}开了一次会", "{org}关心{topic}问题"],
        "contradiction": ["{org}{when}取消了所有会议", "{org}从未讨论过{topic}", "{org}{when}没有开会",
                          "{org}对{topic}问题毫不关心"],
        "neutral": ["会议持续了三个多小时", "{org}的领导对会议结果很满意", "{topic}问题已经彻底解决了",
                    "参加会议的有一百多人", "{org}以前没有专门讨论过{topic}"],
    },
    "reading": {
        "premise": ["{who}{when}读完了一本关于{btopic}的书", "{when}{who}看完了一本讲{btopic}的书"],
        "entailment": ["{who}读过书", "{who}{when}看了一本书", "{who}了解了一些{btopic}知识",
                       "{who}读过关于{btopic}的书"],
        "contradiction": ["{who}{when}一本书都没看", "{who}从来不看书", "{who}{when}没有读过任何书",
                          "{who}对{btopic}一点也不了解"],
        "neutral": ["这本书是{who}的朋友推荐的", "{who}很喜欢写作", "这本书卖得非常好", "{who}打算成为{btopic}专家",
                    "{who}以前不怎么看{btopic}方面的书"],
    },
}
NLI_LABELS = ["entailment", "neutral", "contradiction"]
OCNLI_GENRES = ["news", "gov", "lit", "tv", "phone"]
OCNLI_LEVELS = ["easy", "medium", "hard"]
CMNLI_PREFIX = ["", "", "据了解，", "有消息说，", "我听说"]

# ---------------------------------------------------------------------------
# CSL: abstracts built from a field's terms; keywords match or one is swapped
# ---------------------------------------------------------------------------

CSL_FIELDS = {
    "计算机": ["深度学习", "卷积神经网络", "图像识别", "特征提取", "无线传感器网络", "数据挖掘", "推荐系统",
             "云计算", "隐私保护", "聚类算法", "自然语言处理", "知识图谱", "边缘计算", "目标检测"],
    "材料": ["复合材料", "力学性能", "抗压强度", "纳米颗粒", "微观结构", "热处理", "水泥基材料", "耐腐蚀性",
           "晶粒尺寸", "涂层", "铝合金", "孔隙率"],
    "医学": ["临床疗效", "随机对照试验", "糖尿病", "高血压", "肿瘤细胞", "基因表达", "免疫反应", "并发症",
           "手术治疗", "炎症因子", "预后", "护理干预"],
    "环境": ["水污染", "重金属", "土壤修复", "生态系统", "碳排放", "大气颗粒物", "污水处理", "生物多样性",
           "气候变化", "湿地", "环境监测", "吸附性能"],
    "经济": ["经济增长", "产业结构", "金融风险", "货币政策", "面板数据", "区域经济", "技术创新", "消费需求",
           "对外贸易", "城镇化", "实证分析", "中小企业"],
    "农业": ["作物产量", "施肥", "土壤养分", "水稻", "冬小麦", "病虫害", "灌溉", "品种选育", "光合作用",
           "田间试验", "玉米", "氮素利用"],
}
CSL_SENTENCES = [  # each uses exactly one or two term slots
    "{a}是当前{field}研究中的热点问题",
    "针对{a}中存在的{b}问题,本文提出了一种新的分析方法",
    "首先利用{a}对样本进行处理,然后结合{b}建立模型",
    "研究了{a}对{b}的影响",
    "结果表明,{a}能够显著改善{b}",
    "在此基础上,讨论了{a}的发展趋势",
    "通过对比试验,分析了{a}与{b}之间的关系",
    "最后,展望了{a}在实际中的应用前景",
]

# ---------------------------------------------------------------------------
# CLUEWSC: pronoun agreement (他 male, 她 female, 它 animal or thing)
# ---------------------------------------------------------------------------

WSC_NOUNS = {
    "male": ["爸爸", "哥哥", "爷爷", "叔叔", "小伙子", "男孩", "张伟", "李强", "王刚", "赵磊"],
    "female": ["妈妈", "姐姐", "奶奶", "阿姨", "姑娘", "女孩", "李娜", "王芳", "刘丽", "陈静"],
    "thing": ["小猫", "小狗", "小鸟", "兔子", "金鱼", "杯子", "书包", "风筝", "手机", "雨伞", "自行车", "花瓶"],
}
WSC_PRONOUN = {"male": "他", "female": "她", "thing": "它"}
WSC_PREDICATES = {
    "human": ["看起来很高兴", "累得满头大汗", "忍不住笑了起来", "说明天还要再来", "一句话也没说",
              "显得有些紧张", "马上打电话告诉了家里人"],
    "thing": ["看起来已经很旧了", "被放在了角落里", "一下子就不见了", "显得特别可爱", "身上沾满了泥",
              "被雨淋湿了"],
}
WSC_TEMPLATES = {  # {X} is a person; {Y} a thing ("ht") or a person of the other gender ("hh")
    "ht": ["{X}把{Y}带回了家", "{X}在路边发现了{Y}", "{X}一直很喜欢{Y}", "{X}小心地擦了擦{Y}",
           "{X}找了半天才找到{Y}"],
    "hh": ["{X}去车站接{Y}", "{X}给{Y}打了个电话", "{X}在门口等{Y}", "{X}陪{Y}去了医院",
           "{X}把钥匙交给了{Y}"],
}
WSC_OPENERS = ["", "", "那天下午，", "周末的时候，", "下雨那天，", "一大早，"]

# ---------------------------------------------------------------------------
# Ape210K: word-problem vocabulary
# ---------------------------------------------------------------------------

APE_NAMES = ["小明", "小红", "小华", "小刚", "小丽", "王老师", "李叔叔", "妈妈", "爷爷", "小军"]
APE_ITEMS = [("苹果", "个"), ("铅笔", "支"), ("故事书", "本"), ("贴纸", "张"), ("糖果", "颗"), ("气球", "个")]
APE_GOODS = ["书包", "电风扇", "自行车", "运动鞋", "电饭锅", "台灯", "羽绒服"]
APE_SHOPS = ["水果店", "文具店", "书店", "超市", "粮店"]
APE_FACTORIES = ["一个工厂", "某农场", "一个果园", "某车间", "一家公司"]
APE_CLASSES = ["六年级一班", "五年级二班", "学校合唱队", "某兴趣小组", "四年级三班"]
APE_SUBJECTS = ["数学", "语文", "英语", "科学"]

# ---------------------------------------------------------------------------
# LCCC: dialogue chains; each turn answers the one before it
# ---------------------------------------------------------------------------

WEATHER = {  # weather -> (advice, preparation)
    "下雨": ("出门记得带伞", "带把伞再出门"),
    "大晴天": ("适合出去走走", "戴个帽子防晒"),
    "降温了": ("多穿点衣服", "多穿件外套"),
    "刮大风": ("别在外面待太久", "把窗户关好"),
    "下雪": ("路上小心别滑倒", "穿双防滑的鞋"),
    "特别闷热": ("记得多喝水", "带瓶水出门"),
}
ACTIVITIES = ["准备考试", "写论文", "加班做项目", "找工作", "装修房子", "学开车", "带孩子", "练吉他"]
BREAKFASTS = ["豆浆油条", "小米粥", "鸡蛋饼", "牛奶面包", "肉包子", "热干面"]
FAVORS = ["搬家", "修电脑", "接孩子", "取快递", "占座位", "改简历"]
DAYS = ["明天", "周六", "周日", "后天", "下周一"]
LCCC_CHAINS: list[list[list[str]]] = [
    [  # weather
        ["{city}今天天气怎么样？", "你那边{city}天气好吗？", "这两天{city}的天气如何？"],
        ["{city}今天{weather}，{advice}", "{city}这两天{weather}呢，{advice}"],
        ["好的，那我{prep}", "知道了，我会{prep}的"],
        ["嗯嗯，在{city}照顾好自己", "对，{prep}比较好"],
        ["谢谢关心", "好的，谢谢"],
    ],
    [  # food
        ["晚上一起去吃{food}吧", "好想吃{food}啊，一起去吗？"],
        ["好呀，我也好久没吃{food}了", "行啊，我知道一家{food}做得很好"],
        ["那我们{time}在{place}门口见", "太好了，{time}在{place}集合吧"],
        ["好的，{time}{place}见，不见不散", "没问题，{time}见"],
        ["好嘞，到时候见", "嗯，别迟到哦"],
    ],
    [  # food preference
        ["你喜欢吃{food}吗？", "你觉得{food}好吃吗？"],
        ["喜欢啊，{food}特别好吃", "还行吧，{food}我不太常吃"],
        ["下次我请你吃{food}", "我家附近新开了一家{food}店，下次一起去吧"],
        ["好啊，那就说定了", "好啊，什么时候去？"],
        ["就这个周末吧", "等你有空就去"],
    ],
    [  # greeting and catching up
        ["你好啊", "嗨，好久不见", "哈喽，在吗"],
        ["在呢，好久不见，最近怎么样？", "你好呀，最近过得怎么样？"],
        ["还不错，最近在忙着{activity}", "挺好的，就是天天{activity}有点累"],
        ["{activity}辛苦了，注意休息", "加油，{activity}总会有收获的"],
        ["谢谢，你也是", "嗯嗯，谢谢你"],
    ],
    [  # morning
        ["早上好", "早安"],
        ["早上好，吃早饭了吗？", "早啊，今天吃早饭了没？"],
        ["吃了，早上吃的{breakfast}", "吃过了，{breakfast}"],
        ["{breakfast}不错啊，我也想吃{breakfast}", "早上吃{breakfast}挺好的"],
        ["明天给你带一份{breakfast}", "下次一起去吃{breakfast}"],
    ],
    [  # meeting time
        ["我们{day}几点见面？", "{day}什么时候出发？"],
        ["{day}{time}吧，我在{place}等你", "{time}怎么样？在{place}见"],
        ["好的，{time}{place}见", "没问题，那就{time}"],
        ["别迟到哦", "不见不散"],
        ["放心，我会提前到的", "一定准时"],
    ],
    [  # plans
        ["放假打算去哪里玩？", "周末有什么安排吗？"],
        ["我打算去{city}玩几天", "准备去{city}看看"],
        ["{city}挺好的，准备玩几天？", "去{city}啊，打算待几天？"],
        ["大概玩三天吧，{city}好玩的地方很多", "三四天吧，想多逛逛{city}"],
        ["那祝你在{city}玩得开心", "好啊，记得尝尝{city}的{food}"],
    ],
    [  # thanks
        ["今天真是谢谢你帮我{favor}", "谢谢你昨天帮我{favor}"],
        ["不客气，{favor}只是小事", "不用谢，以后有事尽管找我"],
        ["改天请你吃{food}", "那我请你吃{food}吧"],
        ["好啊，我最喜欢{food}了", "太客气了，不过{food}我很喜欢"],
        ["那就这么说定了", "好，就这么定了"],
    ],
    [  # goodbye
        ["我先去{place}了，拜拜", "不聊了，我要去{place}了"],
        ["好的，拜拜", "去吧，路上注意安全"],
        ["嗯，到了{place}给你发消息", "好，回头聊"],
        ["好的，等你消息", "回头见"],
        ["拜拜", "嗯，再见"],
    ],
]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _rows(base: int, scale: float) -> int:
    return max(MIN_ROWS, int(round(base * scale)))


def _rng(seed: int, name: str) -> random.Random:
    """One independent, reproducible stream per corpus (str seeds are hashed with SHA-512)."""
    return random.Random(f"zhnlp-demo:{seed}:{name}")


def _balanced(rng: random.Random, labels: list, n: int) -> list:
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


# ---------------------------------------------------------------------------
# CLUE generators (one labelled row each)
# ---------------------------------------------------------------------------

def tnews_row(rng: random.Random, k: int) -> dict:
    label, desc, _, words = TNEWS_LABELS[k]
    a, b, c = rng.sample(words, 3)
    sentence = rng.choice(TNEWS_TEMPLATES).format(
        A=a, B=b, place=rng.choice(CITIES), n=rng.choice(NUM_WORDS), year=rng.choice(TNEWS_YEARS))
    if rng.random() < 0.4:
        sentence += rng.choice(TNEWS_TAILS).format(C=c)
    if rng.random() < 0.3:
        keywords = ""
    else:
        kws = [a, b] + rng.sample(words, rng.randint(0, 2))
        if rng.random() < 0.3:
            kws.append(rng.choice(CITIES))
        keywords = ",".join(dict.fromkeys(kws))
    return {"label": label, "label_desc": desc, "sentence": sentence, "keywords": keywords}


def iflytek_row(rng: random.Random, k: int) -> dict:
    label, des, stem, phrases = IFLYTEK_LABELS[k]
    # half the apps have a name that says nothing about their category
    name_stem = stem if rng.random() < 0.5 else rng.choice(IFLYTEK_GENERIC_STEMS)
    name = rng.choice(IFLYTEK_NAME_PREFIX) + name_stem + rng.choice(IFLYTEK_NAME_SUFFIX)
    p = rng.sample(phrases, 4)
    if rng.random() < 0.3:  # apps often mention a neighbouring feature
        other = rng.choice([lab for lab in IFLYTEK_LABELS if lab[0] != label])
        p[3] = rng.choice(other[3])
    text = (rng.choice(IFLYTEK_OPENERS).format(name=name, stem=stem, p1=p[0], p2=p[1], p3=p[2])
            + rng.choice(IFLYTEK_MIDDLES).format(p4=p[3])
            + rng.choice(IFLYTEK_GENERIC) + rng.choice(IFLYTEK_UPDATES))
    return {"label": label, "label_des": des, "sentence": text}


def _afqmc_question(rng: random.Random, product: str, intent: str, template: str | None = None) -> str:
    template = template or rng.choice(AFQMC_INTENTS[intent])
    return rng.choice(AFQMC_PREFIX) + template.format(p=product) + rng.choice(AFQMC_SUFFIX)


def afqmc_row(rng: random.Random, positive: bool) -> dict:
    """Positive: two paraphrases of one (product, intent); negative: another product and/or intent."""
    products = list(AFQMC_PRODUCTS)
    product = rng.choice(products)
    intent = rng.choice(AFQMC_PRODUCTS[product])
    t1, t2 = rng.sample(AFQMC_INTENTS[intent], 2)
    s1 = _afqmc_question(rng, product, intent, t1)
    if positive:
        s2 = _afqmc_question(rng, product, intent, t2)
    else:
        mode = rng.random()
        same_intent = [p for p in products if p != product and intent in AFQMC_PRODUCTS[p]]
        if mode < 0.5:  # same product, different question
            other_i = rng.choice([i for i in AFQMC_PRODUCTS[product] if i != intent])
            s2 = _afqmc_question(rng, product, other_i)
        elif mode < 0.75 and same_intent:  # same question, different product
            s2 = _afqmc_question(rng, rng.choice(same_intent), intent, t2)
        else:
            other_p = rng.choice([p for p in products if p != product])
            other_i = rng.choice([i for i in AFQMC_PRODUCTS[other_p] if i != intent])
            s2 = _afqmc_question(rng, other_p, other_i)
    if rng.random() < 0.5:
        s1, s2 = s2, s1
    return {"sentence1": s1, "sentence2": s2, "label": "1" if positive else "0"}


def _nli_slots(rng: random.Random) -> dict:
    (obj, unit, cat), (obj2, _, _) = rng.sample(NLI_GOODS, 2)
    vehicle, vehicle2 = rng.sample(NLI_VEHICLES, 2)
    return {"who": rng.choice(PERSONS), "when": rng.choice(WHEN), "shop": rng.choice(NLI_SHOPS),
            "num": rng.choice(NUM_WORDS), "unit": unit, "obj": obj, "cat": cat, "obj2": obj2,
            "vehicle": vehicle, "vehicle2": vehicle2, "city": rng.choice(CITIES), "park": rng.choice(NLI_PARKS),
            "food": rng.choice(FOODS), "org": rng.choice(NLI_ORGS), "topic": rng.choice(NLI_TOPICS),
            "btopic": rng.choice(NLI_BOOK_TOPICS)}


def nli_pair(rng: random.Random, label: str, prefix: str = "") -> tuple[str, str]:
    frame = NLI_FRAMES[rng.choice(sorted(NLI_FRAMES))]
    slots = _nli_slots(rng)
    premise = prefix + rng.choice(frame["premise"]).format(**slots) + rng.choice(["", "。"])
    hypothesis = rng.choice(frame[label]).format(**slots) + rng.choice(["", "。"])
    return premise, hypothesis


def ocnli_row(rng: random.Random, label: str, index: int) -> dict:
    s1, s2 = nli_pair(rng, label)
    genre = rng.choice(OCNLI_GENRES)
    row: dict[str, Any] = {"level": rng.choice(OCNLI_LEVELS), "sentence1": s1, "sentence2": s2, "label": label}
    row.update({f"label{i}": label for i in range(5)})
    row.update({"genre": genre, "prem_id": f"{genre}_{index}"})
    return row


def cmnli_row(rng: random.Random, label: str) -> dict:
    s1, s2 = nli_pair(rng, label, prefix=rng.choice(CMNLI_PREFIX))
    return {"sentence1": s1, "sentence2": s2, "label": label}


def csl_row(rng: random.Random, positive: bool) -> dict:
    field = rng.choice(sorted(CSL_FIELDS))
    terms = rng.sample(CSL_FIELDS[field], 5)
    sentences = rng.sample(CSL_SENTENCES, 4)
    # sentence i mentions terms[i], and terms[i + 1] when it has a second slot
    parts = [s.format(a=terms[i], b=terms[i + 1], field=field) for i, s in enumerate(sentences)]
    abst = ",".join(parts[:2]) + "." + ",".join(parts[2:]) + "."
    used = [t for t in terms if t in abst]
    keyword = rng.sample(used, rng.choice([3, 4]))
    if not positive:  # swap one keyword for a term absent from the abstract, same field or another
        if rng.random() < 0.5:
            pool = [t for t in CSL_FIELDS[field] if t not in abst]
        else:
            pool = [t for f in sorted(CSL_FIELDS) if f != field for t in CSL_FIELDS[f] if t not in abst]
        keyword[rng.randrange(len(keyword))] = rng.choice(pool)
    return {"abst": abst, "keyword": keyword, "label": "1" if positive else "0"}


def cluewsc_row(rng: random.Random, positive: bool) -> dict:
    """Text '{opener}{X ... Y}，{pronoun}{predicate}。'; label true iff span1 agrees with the pronoun."""
    gx = rng.choice(["male", "female"])
    kind = rng.choice(["ht", "hh"])
    gy = "thing" if kind == "ht" else ("female" if gx == "male" else "male")
    x, y = rng.choice(WSC_NOUNS[gx]), rng.choice(WSC_NOUNS[gy])
    template = rng.choice(WSC_TEMPLATES[kind])
    opener = rng.choice(WSC_OPENERS)
    clause = template.format(X=x, Y=y)
    x_index = len(opener) + template.format(X="{X}", Y=y).index("{X}")
    y_index = len(opener) + template.format(X=x, Y="{Y}").index("{Y}")
    referent = rng.choice([gx, gy])
    pronoun = WSC_PRONOUN[referent]
    predicate = rng.choice(WSC_PREDICATES["thing" if referent == "thing" else "human"])
    head = opener + clause + "，"
    text = head + pronoun + predicate + "。"
    # span1 agrees with the pronoun iff it is the referent (the two nouns differ in class)
    if positive == (referent == gx):
        span1, span1_index = x, x_index
    else:
        span1, span1_index = y, y_index
    target = {"span2_index": len(head), "span1_index": span1_index, "span1_text": span1, "span2_text": pronoun}
    return {"target": target, "label": "true" if positive else "false", "text": text}


# ---------------------------------------------------------------------------
# CLUE writers
# ---------------------------------------------------------------------------

def _fewclue_task(out: Path, rng: random.Random, scale: float, labels: list, make, test_fields: list[str],
                  id_key: str = "id", str_test_id: bool = False) -> dict[str, int]:
    counts = {}
    for fname, base in FEWCLUE_SIZES.items():
        n = _rows(base, scale)
        rows = []
        for i, lab in enumerate(_balanced(rng, labels, n)):
            row = make(rng, lab, i)
            if fname == "test.json":
                row = {id_key: str(i) if str_test_id else i, **{k: row[k] for k in test_fields}}
            else:
                row[id_key] = i
            rows.append(row)
        counts[fname] = _write_jsonl(out / fname, rows)
    return counts


def _clue_task(out: Path, rng: random.Random, scale: float, labels: list, make) -> dict[str, int]:
    counts = {}
    for fname, base in CLUE_SIZES.items():
        n = _rows(base, scale)
        rows = []
        for i, lab in enumerate(_balanced(rng, labels, n)):
            row = make(rng, lab)
            if fname == "test.json":
                row = {"id": i, "sentence1": row["sentence1"], "sentence2": row["sentence2"]}
            rows.append(row)
        counts[fname] = _write_jsonl(out / fname, rows)
    return counts


def write_clue(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    """Write the seven CLUE tasks under ``out_dir`` (which is the ``clue`` folder)."""
    counts: dict[str, int] = {}

    def add(task: str, task_counts: dict[str, int]) -> None:
        counts.update({f"{task}/{k}": v for k, v in task_counts.items()})

    k_tnews, k_ifly = range(len(TNEWS_LABELS)), range(len(IFLYTEK_LABELS))
    add("tnews", _fewclue_task(out_dir / "tnews", _rng(seed, "tnews"), scale, list(k_tnews),
                               lambda r, k, i: tnews_row(r, k), ["sentence"], str_test_id=True))
    labels_rows = [{"label": str(lab), "label_desc": desc, "label_zh": zh} for lab, desc, zh, _ in TNEWS_LABELS]
    counts["tnews/labels.json"] = _write_jsonl(out_dir / "tnews" / "labels.json", labels_rows)
    add("iflytek", _fewclue_task(out_dir / "iflytek", _rng(seed, "iflytek"), scale, list(k_ifly),
                                 lambda r, k, i: iflytek_row(r, k), ["sentence"]))
    add("ocnli", _fewclue_task(out_dir / "ocnli", _rng(seed, "ocnli"), scale, NLI_LABELS,
                               ocnli_row, ["sentence1", "sentence2"]))
    add("csl", _fewclue_task(out_dir / "csl", _rng(seed, "csl"), scale, [True, False],
                             lambda r, pos, i: csl_row(r, pos), ["abst", "keyword"]))
    add("cluewsc", _fewclue_task(out_dir / "cluewsc", _rng(seed, "cluewsc"), scale, [True, False],
                                 lambda r, pos, i: cluewsc_row(r, pos), ["target", "text"], id_key="idx"))
    add("afqmc", _clue_task(out_dir / "afqmc", _rng(seed, "afqmc"), scale, [True, False], afqmc_row))
    add("cmnli", _clue_task(out_dir / "cmnli", _rng(seed, "cmnli"), scale, NLI_LABELS, cmnli_row))
    return counts


# ---------------------------------------------------------------------------
# Ape210K: number formatting and problem templates
# ---------------------------------------------------------------------------

def _terminates(v: Fraction) -> bool:
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def fmt_decimal(v: Fraction) -> str:
    """Exact decimal string of a terminating fraction ("12", "3.75")."""
    assert _terminates(v), v
    k = 0
    while (v * 10 ** k).denominator != 1:
        k += 1
    digits = str(abs(v.numerator * 10 ** k // v.denominator)).rjust(k + 1, "0")
    s = digits if k == 0 else f"{digits[:-k]}.{digits[-k:]}"
    return ("-" if v < 0 else "") + s


def fmt_fraction(v: Fraction) -> str:
    """Ape210K style: "7", "(3/4)" or mixed "2(1/3)"."""
    if v.denominator == 1:
        return str(v.numerator)
    whole = v.numerator // v.denominator
    rest = v - whole
    frac = f"({rest.numerator}/{rest.denominator})"
    return f"{whole}{frac}" if whole else frac


def fmt_ans(v: Fraction, style: str = "auto") -> str:
    """Format an answer as the real data does: integer, decimal, fraction, mixed number or percent."""
    if style == "percent" and _terminates(v * 100):
        return fmt_decimal(v * 100) + "%"
    if v.denominator == 1:
        return str(v.numerator)
    if style in ("auto", "decimal") and _terminates(v):
        return fmt_decimal(v)
    return fmt_fraction(v)


def ape_segment(text: str) -> str:
    """Ape210K ``segmented_text``: numbers (with decimals and %) whole, every other character alone."""
    return " ".join(re.findall(r"\d+(?:\.\d+)?%?|\S", text))


def ape_mismatch_positions(n: int) -> tuple[int, int]:
    """0-based positions of the two rows per split whose ``ans`` is deliberately wrong."""
    return n // 3, 2 * n // 3


F = Fraction


def _ape_add(r):
    a, b, (item, u), n1, n2 = r.randint(12, 480), r.randint(5, 300), r.choice(APE_ITEMS), *r.sample(APE_NAMES, 2)
    return f"{n1}有{a}{u}{item}，{n2}又送给{n1}{b}{u}，现在{n1}一共有多少{u}{item}？", f"{a}+{b}", F(a + b), "auto"


def _ape_sub(r):
    b = r.randint(10, 300)
    a, shop, (item, u) = b + r.randint(5, 400), r.choice(APE_SHOPS), r.choice(APE_ITEMS)
    return f"{shop}原有{item}{a}{u}，卖出{b}{u}后，还剩多少{u}？", f"{a}-{b}", F(a - b), "auto"


def _ape_mul(r):
    a, b, (item, u) = r.randint(6, 60), r.randint(3, 40), r.choice(APE_ITEMS)
    return f"每箱{item}有{a}{u}，{b}箱一共有多少{u}？", f"{a}*{b}", F(a * b), "auto"


def _ape_div(r):
    b, q = r.randint(2, 9), r.randint(12, 60)
    return f"学校把{b * q}本练习本平均分给{b}个班，每班分到多少本？", f"{b * q}/{b}", F(q), "auto"


def _ape_two_step(r):
    a, p, n1 = r.randint(2, 9), r.randint(3, 15), r.choice(APE_NAMES)
    m = (a * p // 50 + 1) * 50
    return (f"{n1}买了{a}支钢笔，每支{p}元，付给售货员{m}元，应找回多少元？",
            f"{m}-{a}*{p}", F(m - a * p), "auto")


def _ape_fraction_of(r):
    d = r.choice([3, 4, 5, 6, 8])
    a = d * r.randint(3, 30) if r.random() < 0.7 else r.randint(10, 90)
    return (f"一根绳子长{a}米，第一次用去全长的(1/{d})，还剩多少米？",
            f"{a}*(1-(1/{d}))", F(a) * (1 - F(1, d)), "fraction")


def _ape_fraction_left(r):
    d1, d2 = r.sample([3, 4, 5, 6, 7, 8, 9, 10], 2)
    return (f"一项工程，第一周完成了全部的(1/{d1})，第二周完成了全部的(1/{d2})，还剩几分之几没有完成？",
            f"1-(1/{d1})-(1/{d2})", 1 - F(1, d1) - F(1, d2), "fraction")


def _ape_discount(r):
    a, p, g = r.randint(4, 90) * 10, r.choice([5, 10, 15, 20, 25, 30, 40]), r.choice(APE_GOODS)
    return f"一个{g}原价{a}元，现在降价{p}%出售，现价多少元？", f"{a}*(1-{p}%)", F(a) * (1 - F(p, 100)), "decimal"


def _ape_percent_of_total(r):
    total = r.choice([16, 20, 25, 32, 40, 50, 80])
    a, c = r.randint(total // 5, total * 4 // 5), r.choice(APE_CLASSES)
    return (f"{c}有男生{a}人，女生{total - a}人，男生人数占总人数的百分之几？",
            f"({a}/({a}+{total - a}))*100%", F(a, total), "percent")


def _ape_ratio_share(r):
    r1, r2 = r.sample(range(1, 10), 2)
    n, c = (r1 + r2) * r.randint(2, 8), r.choice(APE_CLASSES)
    return (f"{c}男生与女生人数的比是{r1}：{r2}，总人数是{n}人，男生有多少人？",
            f"{n}*{r1}/({r1}+{r2})", F(n * r1, r1 + r2), "auto")


def _ape_ratio_value(r):
    b, a = sorted(r.sample(range(2, 40), 2))
    return f"一个长方形的长是{a}厘米，宽是{b}厘米，长与宽的比值是多少？", f"{a}:{b}", F(a, b), "fraction"


def _ape_mixed(r):
    w, num, den = r.randint(1, 5), *r.choice([(1, 2), (1, 3), (2, 3), (1, 4), (3, 4), (2, 5)])
    n = r.randint(2, 12)
    weight = F(w) + F(num, den)
    return (f"一桶油重{w}({num}/{den})千克，{n}桶油重多少千克？",
            f"{w}({num}/{den})*{n}", weight * n, "fraction")


def _ape_meeting(r):
    a, b, t = r.randint(40, 120), r.randint(40, 120), r.randint(2, 6)
    return (f"甲乙两车同时从两地相对开出，甲车每小时行{a}千米，乙车每小时行{b}千米，{t}小时后相遇，两地相距多少千米？",
            f"({a}+{b})*{t}", F((a + b) * t), "auto")


def _ape_average(r):
    s, n1 = r.sample(range(70, 101), 3), r.choice(APE_NAMES)
    subj = r.choice(APE_SUBJECTS)
    return (f"{n1}三次{subj}测验的成绩分别是{s[0]}分、{s[1]}分和{s[2]}分，平均成绩是多少分？",
            f"({s[0]}+{s[1]}+{s[2]})/3", F(sum(s), 3), "fraction")


def _ape_work(r):
    a, b = r.sample(range(4, 31), 2)
    return (f"一项工程，甲队单独做{a}天完成，乙队单独做{b}天完成，两队合作多少天完成？",
            f"1/((1/{a})+(1/{b}))", 1 / (F(1, a) + F(1, b)), "fraction")


def _ape_growth(r):
    a, p = r.randint(10, 400), r.choice([5, 8, 10, 12, 15, 20, 25, 50])
    fac, item = r.choice(APE_FACTORIES), r.choice(["粮食", "钢材", "水果", "化肥", "蔬菜"])
    return (f"{fac}去年生产{item}{a}吨，今年比去年增产{p}%，今年生产{item}多少吨？",
            f"{a}*(1+{p}%)", F(a) * (1 + F(p, 100)), "decimal")


def _ape_area(r):
    a = F(r.randint(10, 60)) + r.choice([F(0), F(1, 2), F(1, 4)])
    b = F(r.randint(4, 30)) + r.choice([F(0), F(1, 2)])
    return (f"一块长方形菜地长{fmt_decimal(a)}米，宽{fmt_decimal(b)}米，这块菜地的面积是多少平方米？",
            f"{fmt_decimal(a)}*{fmt_decimal(b)}", a * b, "decimal")


APE_TEMPLATES = [_ape_add, _ape_sub, _ape_mul, _ape_div, _ape_two_step, _ape_fraction_of, _ape_fraction_left,
                 _ape_discount, _ape_percent_of_total, _ape_ratio_share, _ape_ratio_value, _ape_mixed,
                 _ape_meeting, _ape_average, _ape_work, _ape_growth, _ape_area]


def ape_rows(rng: random.Random, n: int, ids: list[str]) -> list[dict]:
    bad = set(ape_mismatch_positions(n))
    rows = []
    for i in range(n):
        text, equation, value, style = rng.choice(APE_TEMPLATES)(rng)
        if i in bad:
            value += 1  # deliberate mismatch (see the module docstring)
        rows.append({"id": ids[i], "segmented_text": ape_segment(text), "original_text": text,
                     "ans": fmt_ans(value, style), "equation": f"x={equation}"})
    return rows


def write_ape210k(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    rng = _rng(seed, "ape210k")
    sizes = {split: _rows(base, scale) for split, base in APE_SIZES.items()}
    ids = [str(i) for i in rng.sample(range(100000, 1000000), sum(sizes.values()))]
    counts, start = {}, 0
    for split, n in sizes.items():
        rows = ape_rows(rng, n, ids[start:start + n])
        start += n
        counts[f"{split}.ape.json"] = _write_jsonl(out_dir / f"{split}.ape.json", rows)
    return counts


# ---------------------------------------------------------------------------
# LCCC
# ---------------------------------------------------------------------------

def _dialogue_slots(rng: random.Random) -> dict:
    weather = rng.choice(sorted(WEATHER))
    advice, prep = WEATHER[weather]
    return {"city": rng.choice(CITIES), "weather": weather, "advice": advice, "prep": prep,
            "food": rng.choice(FOODS), "time": rng.choice(TIMES), "place": rng.choice(PLACES),
            "activity": rng.choice(ACTIVITIES), "breakfast": rng.choice(BREAKFASTS),
            "favor": rng.choice(FAVORS), "day": rng.choice(DAYS)}


def make_dialogue(rng: random.Random) -> list[str]:
    """2-5 turns of one chain; slot values are shared, so replies echo the context."""
    chain = rng.choice(LCCC_CHAINS)
    slots = _dialogue_slots(rng)
    length = rng.randint(2, 5)
    return [rng.choice(step).format(**slots) for step in chain[:length]]


def spaced(turn: str) -> str:
    """LCCC style: every character separated by one space."""
    return " ".join(ch for ch in turn if not ch.isspace())


def lccc_split(rng: random.Random, n: int, seen: set) -> list[list[str]]:
    """``n - 2`` distinct dialogues (one with an empty turn) plus 2 exact copies, in the LCCC spacing."""
    dialogues = []
    while len(dialogues) < n - 2:
        d = make_dialogue(rng)
        key = tuple(d)
        if key not in seen and (len(dialogues) > 0 or len(d) >= 3):
            seen.add(key)
            dialogues.append(d)
    dialogues[0][1] = ""  # the one dialogue with an empty turn (the first one has >= 3 turns)
    for _ in range(2):  # two exact duplicates, at random positions
        copy = list(dialogues[rng.randrange(1, len(dialogues))])
        dialogues.insert(rng.randrange(len(dialogues) + 1), copy)
    empty = dialogues.pop(next(i for i, d in enumerate(dialogues) if "" in d))
    dialogues.insert(rng.randrange(len(dialogues) + 1), empty)
    return [[spaced(t) for t in d] for d in dialogues]


def write_lccc(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    rng = _rng(seed, "lccc")
    seen: set = set()
    data = {split: lccc_split(rng, _rows(base, scale), seen) for split, base in LCCC_SIZES.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "dialogues.json").open("w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(data, ensure_ascii=False, indent=0) + "\n")
    counts = {"dialogues.json": sum(len(v) for v in data.values())}
    for split, dialogues in data.items():
        with (out_dir / f"{split}.txt").open("w", encoding="utf-8", newline="\n") as f:
            f.writelines("\t".join(d) + "\n" for d in dialogues)
        counts[f"{split}.txt"] = len(dialogues)
    return counts


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------

def write_demo_corpora(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    """Write all demo corpora under ``out_dir``; return row counts keyed by relative path."""
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    for name, writer in (("clue", write_clue), ("ape210k", write_ape210k), ("lccc", write_lccc)):
        counts.update({f"{name}/{k}": v for k, v in writer(out_dir / name, seed, scale).items()})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zhnlp.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every row count")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    counts = write_demo_corpora(args.out, seed=args.seed, scale=args.scale)
    for path, n in counts.items():
        print(f"{n:6d}  {path}")
    print(f"wrote {len(counts)} files ({sum(counts.values())} rows) to {args.out} "
          f"in {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
