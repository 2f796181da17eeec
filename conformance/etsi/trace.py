"""Print the HTTP requests and responses robot logged for the tests whose name matches a regex.

usage: conformance/.venv-etsi/bin/python conformance/etsi/trace.py OUTPUT.xml REGEX
Works on the runner's results (conformance/results/*/output.xml).
"""
import sys, json, re
from robot.api import ExecutionResult, ResultVisitor
path, pat = sys.argv[1], sys.argv[2]
CTX="https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld"
class V(ResultVisitor):
    def visit_test(self, t):
        if not re.match(pat, t.name): return
        print("=====", t.name, t.status, (t.message or "")[:300].replace("\n"," "))
        msgs=[]
        def walk(item):
            x=getattr(item,'setup',None)
            if x: walk(x)
            for b in getattr(item,'body',[]):
                if b.type=='MESSAGE': msgs.append(b.message)
                else: walk(b)
            x=getattr(item,'teardown',None)
            if x: walk(x)
        walk(t)
        i=0
        while i < len(msgs):
            m=msgs[i]
            if m.strip()=="Request ->" and i+3 < len(msgs):
                try:
                    rq=json.loads(msgs[i+1]); rs=json.loads(msgs[i+3])
                except Exception: i+=1; continue
                h=rq['headers']; hh={k:v for k,v in h.items() if k in('Content-Type','Accept','Link')}
                body=json.dumps(rq['body'],separators=(',',':')) if rq['body'] is not None else ''
                print(f"  > {rq['method']} {rq['url'].replace('http://localhost:9090','')} {hh} {body[:400]}".replace(CTX,'CTX'))
                rh={k:v for k,v in rs['headers'].items() if k.lower() in('content-type','location','link','ngsild-results-count','content-length')}
                rb=json.dumps(rs['body'],separators=(',',':')) if rs['body'] is not None else ''
                print(f"  < {rs['status_code']} {rs['reason']} {rh} {rb[:700]}".replace(CTX,'CTX'))
                i+=4
            else: i+=1
r=ExecutionResult(path); r.visit(V())
