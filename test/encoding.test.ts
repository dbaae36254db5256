// Encoding detection (src/imports/encoding.ts) on CSV text written in each legacy code page
// by iconv-lite, and on the corpus files whose encoding is known.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import iconv from 'iconv-lite'
import { detectDialect, readRecords } from '../src/imports/index.ts'
import { detectEncoding, HEAD_SAMPLE_BYTES, TAIL_SAMPLE_BYTES } from '../src/imports/encoding.ts'

const corpus = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'corpus')

type Language = { header: string; names: string[]; cities: string[]; notes: string[] }

const LANGUAGES: Record<string, Language> = {
  chinese: {
    header: 'id,姓名,城市,备注',
    names: ['王伟', '李娜', '张敏', '刘洋', '陈静', '杨磊', '赵丽', '黄强', '周杰', '吴芳', '徐明', '孙燕'],
    cities: ['北京', '上海', '广州', '深圳', '成都', '杭州', '武汉', '西安', '南京', '重庆'],
    notes: ['已付款', '等待发货', '客户要求退款', '地址已更新', '请电话联系', '新客户', '重要客户', '订单已取消', '', '下周再联系'],
  },
  traditionalChinese: {
    header: 'id,姓名,城市,備註',
    names: ['陳志明', '林美玲', '黃建國', '張雅婷', '李宗翰', '王淑芬', '吳俊傑', '劉怡君', '蔡明哲', '楊佩珊'],
    cities: ['臺北', '高雄', '臺中', '臺南', '新竹', '桃園', '基隆', '嘉義', '香港', '澳門'],
    notes: ['已付款', '等待出貨', '客戶要求退款', '地址已更新', '請電話聯絡', '新客戶', '重要客戶', '訂單已取消', '', '下週再聯絡'],
  },
  japanese: {
    header: 'id,氏名,都市,備考',
    names: ['佐藤太郎', '鈴木花子', '高橋健一', '田中美咲', '伊藤誠', '渡辺さくら', '山本翔太', '中村愛', '小林直樹', '加藤ゆい'],
    cities: ['東京', '大阪', '名古屋', '札幌', '福岡', '京都', '横浜', '神戸', '仙台', '広島'],
    notes: ['支払い済み', '発送待ち', '返品希望', '住所変更あり', '電話で連絡してください', '新規のお客様', 'カタログ送付済み', '', 'キャンセル'],
  },
  korean: {
    header: 'id,이름,도시,비고',
    names: ['김민준', '이서연', '박지훈', '최수아', '정우진', '강하은', '조현우', '윤지민', '장서준', '임예린'],
    cities: ['서울', '부산', '인천', '대구', '대전', '광주', '수원', '울산', '제주', '청주'],
    notes: ['결제 완료', '배송 대기', '환불 요청', '주소 변경됨', '전화 연락 바람', '신규 고객', '주문 취소', '', '다음 주에 연락'],
  },
  russian: {
    header: 'id,фамилия,город,примечание',
    names: ['Иванов Сергей', 'Смирнова Ольга', 'Кузнецов Дмитрий', 'Попова Анна', 'Васильев Алексей', 'Соколова Екатерина', 'Михайлов Андрей', 'Новикова Татьяна', 'Фёдоров Игорь', 'Морозова Юлия'],
    cities: ['Москва', 'Санкт-Петербург', 'Новосибирск', 'Екатеринбург', 'Казань', 'Нижний Новгород', 'Самара', 'Ростов-на-Дону', 'Уфа', 'Красноярск'],
    notes: ['оплачено', 'ожидает отправки', 'клиент просит возврат', 'адрес изменён', 'позвонить после обеда', 'новый клиент', 'заказ отменён', '', 'Счёт выставлен'],
  },
  polish: {
    header: 'id,nazwisko,miasto,uwagi',
    names: ['Łukasz Wójcik', 'Agnieszka Kowalczyk', 'Paweł Zieliński', 'Małgorzata Wiśniewska', 'Grzegorz Dąbrowski', 'Katarzyna Woźniak', 'Michał Kamiński', 'Zofia Szymańska', 'Jan Nowak', 'Żaneta Ślusarczyk'],
    cities: ['Kraków', 'Łódź', 'Wrocław', 'Poznań', 'Gdańsk', 'Szczecin', 'Bydgoszcz', 'Białystok', 'Rzeszów', 'Warszawa'],
    notes: ['zapłacono', 'oczekuje na wysyłkę', 'klient prosi o zwrot', 'zmiana adresu', 'proszę zadzwonić', 'nowy klient', 'zamówienie anulowane', '', 'źle wpisany kod'],
  },
  czech: {
    header: 'id,jméno,město,poznámka',
    names: ['Jiří Novák', 'Petra Svobodová', 'Tomáš Dvořák', 'Lucie Černá', 'Martin Procházka', 'Kateřina Kučerová', 'Jan Veselý', 'Tereza Horáková', 'Lukáš Němec', 'Šárka Marková'],
    cities: ['Praha', 'Brno', 'Ostrava', 'Plzeň', 'Liberec', 'Olomouc', 'České Budějovice', 'Hradec Králové', 'Ústí nad Labem', 'Pardubice'],
    notes: ['zaplaceno', 'čeká na odeslání', 'zákazník žádá vrácení', 'změna adresy', 'zavolejte prosím', 'nový zákazník', 'objednávka zrušena', '', 'špatně zadaný kód'],
  },
  greek: {
    header: 'id,όνομα,πόλη,σημείωση',
    names: ['Γιώργος Παπαδόπουλος', 'Μαρία Κωνσταντίνου', 'Νίκος Γεωργίου', 'Ελένη Δημητρίου', 'Άννα Οικονόμου', 'Κώστας Αθανασίου', 'Δημήτρης Νικολάου', 'Σοφία Ιωάννου', 'Άγγελος Μαυρίδης'],
    cities: ['Αθήνα', 'Θεσσαλονίκη', 'Πάτρα', 'Ηράκλειο', 'Λάρισα', 'Βόλος', 'Άρτα', 'Ιωάννινα', 'Χανιά', 'Ρόδος'],
    notes: ['πληρώθηκε', 'σε αναμονή αποστολής', 'ο πελάτης ζητά επιστροφή', 'αλλαγή διεύθυνσης', 'νέος πελάτης', 'ακυρώθηκε', '', 'Τηλεφωνήστε αύριο'],
  },
  western: {
    header: 'id,name,city,note',
    names: ['François Müller', 'Chloé Dubois', 'Jürgen Weiß', 'Hélène Lefèvre', 'Björn Schäfer', 'Anaïs Girard', 'Jörg Köhler', 'Sébastien Noël', 'Zoë Krüger', 'Renée Faßbender'],
    cities: ['Zürich', 'Genève', 'Köln', 'München', 'Besançon', 'Orléans', 'Düsseldorf', 'Nîmes', 'Lübeck', 'Paris'],
    notes: ['déjà payé', 'à rappeler', 'Lieferung verspätet', 'Größe prüfen', 'reçu le 3 mai', 'commandé', '', 'Kunde möchte Rückruf', 'très urgent'],
  },
  ascii: {
    header: 'id,name,city,note',
    names: ['John Smith', 'Mary Jones', 'Peter Brown', 'Linda Wilson', 'James Taylor', 'Susan Clark', 'Robert Lewis', 'Karen Walker'],
    cities: ['London', 'Leeds', 'Bristol', 'Cardiff', 'York', 'Glasgow', 'Dublin', 'Bath'],
    notes: ['paid', 'call back', 'address changed', 'new customer', '', 'cancelled', 'send invoice'],
  },
}

/** A CSV of `rows` rows in the language, the same for every run (a fixed sequence, no randomness). */
function csvText(language: Language, rows = 300, lineEnd = '\r\n'): string {
  const { header, names, cities, notes } = language
  const lines = [header]
  for (let i = 1; i <= rows; i++) {
    const note = notes[(i * 7) % notes.length]!
    lines.push(`${i},${names[(i * 5) % names.length]},${cities[(i * 3) % cities.length]},${note.includes(',') ? `"${note}"` : note}`)
  }
  return lines.join(lineEnd) + lineEnd
}

/** The samples detection reads from a file: its head and, when longer, its tail. */
function samplesOf(bytes: Buffer): Buffer[] {
  if (bytes.length <= HEAD_SAMPLE_BYTES) return [bytes]
  return [bytes.subarray(0, HEAD_SAMPLE_BYTES), bytes.subarray(Math.max(HEAD_SAMPLE_BYTES, bytes.length - TAIL_SAMPLE_BYTES))]
}

const detect = (bytes: Buffer) => detectEncoding(samplesOf(bytes))

const CASES: [encoding: string, language: keyof typeof LANGUAGES, expected: string][] = [
  ['gbk', 'chinese', 'gb18030'], // gb18030 is gbk's superset: the same text, the wider name
  ['gb18030', 'chinese', 'gb18030'],
  ['big5', 'traditionalChinese', 'big5'],
  ['shift_jis', 'japanese', 'shift_jis'],
  ['euc-jp', 'japanese', 'euc-jp'],
  ['euc-kr', 'korean', 'euc-kr'],
  ['koi8-r', 'russian', 'koi8-r'],
  ['windows-1251', 'russian', 'windows-1251'],
  ['windows-1250', 'polish', 'windows-1250'],
  ['iso-8859-2', 'polish', 'iso-8859-2'],
  ['windows-1250', 'czech', 'windows-1250'],
  ['iso-8859-2', 'czech', 'iso-8859-2'],
  ['iso-8859-7', 'greek', 'iso-8859-7'],
  ['windows-1253', 'greek', 'windows-1253'],
  ['macintosh', 'western', 'macintosh'],
  ['windows-1252', 'western', 'windows-1252'],
]

describe('legacy code pages are told apart by how the decoded text reads', () => {
  for (const [encoding, language, expected] of CASES) {
    test(`${language} in ${encoding} is read as ${expected}`, () => {
      const text = csvText(LANGUAGES[language]!)
      const guess = detect(iconv.encode(text, encoding))
      assert.equal(guess.encoding, expected, guess.reason)
      assert.equal(guess.bom, false)
      assert.ok(guess.reason.includes(expected), guess.reason)
      assert.ok(!guess.alternatives.includes(expected), 'the answer is not among its own alternatives')
      assert.equal(iconv.decode(iconv.encode(text, encoding), guess.encoding), text, 'the file decodes back to the text written')
    })
  }

  test('KOI8-R and windows-1251 each name the other as an alternative, the way to the other reading', () => {
    const text = csvText(LANGUAGES.russian!)
    assert.ok(detect(iconv.encode(text, 'koi8-r')).alternatives.includes('windows-1251'))
    assert.ok(detect(iconv.encode(text, 'windows-1251')).alternatives.includes('koi8-r'))
  })

  test('a windows-1252 file with only a few accented words in hundreds of rows stays windows-1252', () => {
    const lines = csvText(LANGUAGES.ascii!).split('\r\n')
    lines[40] = '40,José Álvarez,Madrid,paid'
    lines[170] = '170,Renée Müller,Köln,call back'
    lines[260] = '260,Chloe Smith,Paris,“urgent” – see notes'
    const guess = detect(iconv.encode(lines.join('\r\n'), 'windows-1252'))
    assert.equal(guess.encoding, 'windows-1252', guess.reason)
  })

  test('a single accented name in an ASCII file is windows-1252, the common case', () => {
    const lines = csvText(LANGUAGES.ascii!).split('\r\n')
    lines[100] = '100,Zoë Taylor,York,paid'
    assert.equal(detect(iconv.encode(lines.join('\r\n'), 'windows-1252')).encoding, 'windows-1252')
  })
})

describe('Unicode', () => {
  const text = csvText(LANGUAGES.western!) + csvText(LANGUAGES.russian!, 50).split('\r\n').slice(1).join('\r\n')

  test('UTF-8 without a BOM, and with one', () => {
    const plain = detect(Buffer.from(text, 'utf8'))
    assert.deepEqual([plain.encoding, plain.bom], ['utf-8', false])
    assert.match(plain.reason, /valid UTF-8/)
    const withBom = detect(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text, 'utf8')]))
    assert.deepEqual([withBom.encoding, withBom.bom], ['utf-8', true])
    assert.match(withBom.reason, /byte-order mark EF BB BF/)
  })

  test('UTF-16LE and UTF-16BE without a BOM are found by their 0x00 bytes', () => {
    for (const encoding of ['utf-16le', 'utf-16be']) {
      const guess = detect(iconv.encode(text, encoding, { addBOM: false }))
      assert.deepEqual([guess.encoding, guess.bom], [encoding, false], guess.reason)
      assert.match(guess.reason, /no byte-order mark/)
    }
  })

  test('Chinese in UTF-16LE without a BOM (few 0x00 bytes) is still UTF-16LE', () => {
    const guess = detect(iconv.encode(csvText(LANGUAGES.chinese!), 'utf-16le', { addBOM: false }))
    assert.equal(guess.encoding, 'utf-16le', guess.reason)
  })

  test('a UTF-8 file with one Latin-1 name 1,800 lines down stays UTF-8, and that row is reported, not loaded as mojibake', async () => {
    const lines = csvText(LANGUAGES.western!, 2500).split('\r\n')
    const bytes = Buffer.concat(lines.map((line, i) => {
      const encoded = i === 1800 ? iconv.encode(`${line.split(',')[0]},Mathéo Lefèvre,Orléans,reçu`, 'latin1') : Buffer.from(line, 'utf8')
      return Buffer.concat([encoded, Buffer.from(i < lines.length - 1 ? '\r\n' : '')])
    }))
    assert.ok(bytes.indexOf(Buffer.from('Math\xe9o', 'latin1')) > 64 * 1024, 'the Latin-1 line lies beyond the first 64 KiB')
    const guess = detect(bytes)
    assert.equal(guess.encoding, 'utf-8', guess.reason)

    const dialect = detectDialect(bytes.subarray(0, HEAD_SAMPLE_BYTES))
    assert.equal(dialect.encoding, 'utf-8')
    const problems: { line: number; problem: string }[] = []
    for await (const record of readRecords(Readable.from([bytes]), dialect)) {
      if (record.problem) problems.push({ line: record.line, problem: record.problem })
    }
    assert.deepEqual(problems.map((p) => p.line), [1801])
    assert.match(problems[0]!.problem, /not valid utf-8/)
  })
})

describe('samples beyond the first 64 KiB', () => {
  test('accented rows only at the end of a file longer than the head sample are seen in the tail: windows-1252, not UTF-8', () => {
    const ascii = csvText(LANGUAGES.ascii!, 40000)
    const bytes = Buffer.concat([Buffer.from(ascii), iconv.encode(csvText(LANGUAGES.western!, 20).split('\r\n').slice(1).join('\r\n'), 'windows-1252')])
    assert.ok(bytes.length > HEAD_SAMPLE_BYTES + TAIL_SAMPLE_BYTES)
    const guess = detect(bytes)
    assert.equal(guess.encoding, 'windows-1252', guess.reason)
    const dialect = detectDialect(bytes.subarray(0, HEAD_SAMPLE_BYTES), {}, bytes.subarray(-TAIL_SAMPLE_BYTES))
    assert.equal(dialect.encoding, 'windows-1252')
    assert.match(dialect.reasons[0]!, /^encoding windows-1252: /)
  })

  test('a file between 64 KiB and the head sample still has its footer found: the end of the head stands for the tail', () => {
    const body = csvText(LANGUAGES.ascii!, 4000)
    const bytes = Buffer.from(`${body}\r\nSource: the sales ledger, 2024\r\n`)
    assert.ok(bytes.length > 64 * 1024 && bytes.length < HEAD_SAMPLE_BYTES)
    const dialect = detectDialect(bytes)
    assert.equal(dialect.footerLines, 2, dialect.reasons.join(' | '))
  })

  test('the encoding option wins, and the detected encoding stays among the alternatives', () => {
    const bytes = iconv.encode(csvText(LANGUAGES.russian!), 'windows-1251')
    const dialect = detectDialect(bytes, { encoding: 'KOI8-R' })
    assert.equal(dialect.encoding, 'koi8-r')
    assert.equal(dialect.encodingAlternatives[0], 'windows-1251')
    assert.match(dialect.reasons[0]!, /^encoding koi8-r: as chosen \(encoding=koi8-r\); detection would read the file as windows-1251/)
    assert.throws(() => detectDialect(bytes, { encoding: 'klingon' }), { code: 'UNSUPPORTED_ENCODING' })
  })
})

describe('the corpus files with a stated encoding', () => {
  type Entry = { file: string; encoding: string | null; bom: boolean | null }
  const manifest = JSON.parse(readFileSync(path.join(corpus, 'manifest.json'), 'utf8')) as Entry[]
  // Where the file has no byte in 0x80-0x9F, ISO-8859-1 and windows-1252 give the same text.
  const sameAnswer = (name: string) => (name === 'iso-8859-1' ? 'windows-1252' : name)
  for (const entry of manifest.filter((e) => e.encoding)) {
    test(`${entry.file}: ${entry.encoding}`, () => {
      const guess = detect(readFileSync(path.join(corpus, entry.file)))
      assert.equal(sameAnswer(guess.encoding), sameAnswer(entry.encoding!), guess.reason)
      if (entry.bom !== null) assert.equal(guess.bom, entry.bom)
    })
  }
})

describe('speed', () => {
  test('a 1 MiB sample of each kind is judged in well under a second', () => {
    const kinds: [string, Buffer][] = [
      ['koi8-r', iconv.encode(csvText(LANGUAGES.russian!, 30000), 'koi8-r').subarray(0, HEAD_SAMPLE_BYTES)],
      ['shift_jis', iconv.encode(csvText(LANGUAGES.japanese!, 40000), 'shift_jis').subarray(0, HEAD_SAMPLE_BYTES)],
      ['windows-1252', iconv.encode(csvText(LANGUAGES.western!, 30000), 'windows-1252').subarray(0, HEAD_SAMPLE_BYTES)],
      ['utf-8', Buffer.from(csvText(LANGUAGES.western!, 30000), 'utf8').subarray(0, HEAD_SAMPLE_BYTES)],
    ]
    for (const [name, bytes] of kinds) {
      assert.equal(bytes.length, HEAD_SAMPLE_BYTES)
      detect(bytes) // the first call builds tables
      const started = performance.now()
      const guess = detect(bytes)
      const ms = performance.now() - started
      assert.equal(guess.encoding, name)
      console.log(`# detectEncoding on 1 MiB of ${name}: ${ms.toFixed(0)} ms`)
      assert.ok(ms < 1000, `${name}: ${ms} ms`)
    }
  })
})
