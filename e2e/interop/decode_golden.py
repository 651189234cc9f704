#!/usr/bin/env python3
"""Reference decoder for the golden object fixtures (spec §4.1/§4.3): prints every record of every
object of each fixture dir and asserts record CRCs. Usage: decode_golden.py e2e/interop/golden/{small,n1000,...}"""
import struct, zlib, sys, os, glob
def recs(b):
    off=0; out=[]
    while off+9<=len(b):
        crc,t,l=struct.unpack_from('<IBI',b,off)
        p=b[off+9:off+9+l]
        ok = zlib.crc32(b[off+4:off+9+l])&0xffffffff==crc
        out.append((off,t,l,p,ok)); off+=9+l
    return out,off
for d in sys.argv[1:]:
    segs = sorted({os.path.dirname(f) for f in glob.glob(d + '/objects/**/*.blk', recursive=True)})
    assert segs, 'no .blk objects under %s/objects' % d
    for seg in segs:
        for f in sorted(os.listdir(seg), key=lambda x:(len(x),x)):
            b=open(os.path.join(seg,f),'rb').read()
            if not f.endswith('.blk') or len(b)==1: print(d,os.path.relpath(seg,d),f,len(b),b[:1]); continue
            rs,end=recs(b)
            summ=[]
            for off,t,l,p,ok in rs:
                assert ok, "record CRC mismatch in %s at offset %d" % (f, off)
                if t==1: summ.append('H(v%d,fl%d,first%d)'%struct.unpack_from('<HHq',p))
                elif t==5:
                    bn,fe,le,bl,bc=struct.unpack_from('<iqqII',p)
                    data=b[off+9+l:off+9+l+bl]
                    assert zlib.crc32(data)&0xffffffff==bc, 'block CRC mismatch in %s block %d' % (f, bn)
                    summ.append('BH(b%d,%d-%d,len%d,crcok=%s)'%(bn,fe,le,bl,zlib.crc32(data)&0xffffffff==bc))
                elif t==3: summ.append('I(b%d,so%d,sz%d,%d-%d)'%struct.unpack_from('<iqIqq',p))
                elif t==4: summ.append('F(blocks%d,recs%d,size%d,io%d,il%d,v%d,fl%d,magic%s,lac%d)'%(struct.unpack_from('<iIQQIHH',p)+(p[32:36],)+struct.unpack_from('<q',p,36)))
            nd=sum(1 for r in rs if r[1]==2)
            print(d,os.path.relpath(seg,d),f,len(b),'end=',end,'data=',nd,' '.join(summ))
