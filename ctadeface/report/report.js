(function(){
  var t0=performance.now(),body=document.body;
  var data=JSON.parse(document.getElementById('scan-data').textContent);
  var col={};data.columns.forEach(function(c,i){col[c]=i;});
  var kinds=data.kinds,rows=data.rows;
  var table=document.getElementById('scans'),tbody=table.tBodies[0];
  var heads=table.tHead.rows[0].cells;
  var el=function(id){return document.getElementById(id);};
  var state={status:'',mode:'',text:'',look:false,sort:-1,asc:true,page:0,size:PAGE_SIZE};
  // the address's #look, #status=S or #sort=[-]COLUMN (several joined by &) set the view
  function fromHash(){
    var parts=decodeURIComponent(location.hash.replace(/^#/,'')).split('&'),known=false;
    parts.forEach(function(h){
      if(h==='look'){state.look=true;known=true;}
      else if(h.indexOf('status=')===0){state.status=h.slice(7);known=true;}
      else if(h.indexOf('sort=')===0){
        var key=h.slice(5),asc=key.charAt(0)!=='-';key=key.replace(/^-/,'');
        if(key in col){state.sort=col[key];state.asc=asc;known=true;}}
    });
    if(!known)return false;
    state.page=0;el('f-look').checked=state.look;el('f-status').value=state.status;return true;
  }
  function keep(r){
    if(state.status&&r[col.status]!==state.status)return false;
    if(state.mode&&r[col.mask_mode]!==state.mode)return false;
    if(state.look&&!r[col.look])return false;
    if(state.text){var q=state.text.toLowerCase();
      if((r[col.participant_id]+' '+r[col.session_id]+' '+r[col.source]).toLowerCase().indexOf(q)<0)return false;}
    return true;
  }
  function num(v){var x=parseFloat(v);return isNaN(x)?null:x;}
  function compare(i,asc){
    var isnum=kinds[i]==='num';
    return function(a,b){
      var x=a[i],y=b[i];
      if(isnum){x=num(x);y=num(y);
        if(x===null||y===null)return (x===null)-(y===null);}
      return (x<y?-1:x>y?1:0)*(asc?1:-1);
    };
  }
  function cell(tr,text,cls){var td=document.createElement('td');td.textContent=text;
    if(cls)td.className=cls;tr.appendChild(td);return td;}
  function link(href,text){var a=document.createElement('a');a.href=href;a.textContent=text;return a;}
  function pictures(tr,r){
    var td=cell(tr,'');
    if(r[col.thumbnail]){
      var a=link(r[col.figure],''),img=document.createElement('img');
      img.loading='lazy';img.decoding='async';img.src=r[col.thumbnail];
      img.alt='renders of '+r[col.source];a.appendChild(img);td.appendChild(a);
    }else if(r[col.figure]){td.appendChild(link(r[col.figure],'figure'));}
    else{var s=document.createElement('span');s.className='none';
      s.textContent='no renders (verification off, or not processed)';td.appendChild(s);}
    if(r[col.sidecar]){td.appendChild(document.createElement('br'));
      td.appendChild(link(r[col.sidecar],'sidecar'));}
    if(r[col.reason]){var w=document.createElement('div');w.textContent=r[col.reason];
      td.appendChild(w);}
  }
  function render(){
    var shown=rows.filter(keep);
    if(state.sort>=0)shown=shown.slice().sort(compare(state.sort,state.asc));
    var pages=Math.max(1,Math.ceil(shown.length/state.size));
    state.page=Math.min(state.page,pages-1);
    var start=state.page*state.size,part=shown.slice(start,start+state.size);
    var frag=document.createDocumentFragment();
    part.forEach(function(r){
      var tr=document.createElement('tr');if(r[col.look])tr.className='look';
      data.shown.forEach(function(c,i){
        if(i===data.picture_at)pictures(tr,r);
        cell(tr,r[col[c]],kinds[col[c]]==='num'?'num':'');});
      frag.appendChild(tr);
    });
    tbody.replaceChildren(frag);
    el('p-info').textContent=shown.length?('rows '+(start+1)+'-'+(start+part.length)+' of '+
      shown.length+(shown.length<rows.length?' (filtered from '+rows.length+')':'')):'no row matches';
    el('p-page').textContent='page '+(state.page+1)+' of '+pages;
    el('p-first').disabled=el('p-prev').disabled=state.page===0;
    el('p-next').disabled=el('p-last').disabled=state.page>=pages-1;
    Array.prototype.forEach.call(heads,function(h){
      h.classList.remove('sorted-asc','sorted-desc');
      if(state.sort>=0&&h.getAttribute('data-key')===data.columns[state.sort])
        h.classList.add(state.asc?'sorted-asc':'sorted-desc');});
    checkImages();
  }
  function checkImages(){
    var imgs=Array.prototype.slice.call(tbody.querySelectorAll('img'));
    body.removeAttribute('data-images-decoded');
    Promise.all(imgs.map(function(i){return i.decode().then(function(){return 1;},function(){return 0;});}))
      .then(function(ok){body.setAttribute('data-images-decoded',
        ok.reduce(function(a,b){return a+b;},0)+'/'+imgs.length);});
  }
  Array.prototype.forEach.call(heads,function(th){
    var key=th.getAttribute('data-key');if(!key)return;
    th.addEventListener('click',function(){
      var k=col[key];
      state.asc=state.sort===k?!state.asc:true;state.sort=k;state.page=0;render();});
  });
  function on(id,ev,f){el(id).addEventListener(ev,function(e){f(e.target);state.page=0;render();});}
  on('f-status','change',function(t){state.status=t.value;});
  on('f-mode','change',function(t){state.mode=t.value;});
  on('f-text','input',function(t){state.text=t.value.trim();});
  on('f-look','change',function(t){state.look=t.checked;});
  on('p-size','change',function(t){state.size=parseInt(t.value,10);});
  function go(id,f){el(id).addEventListener('click',function(){f();render();});}
  go('p-first',function(){state.page=0;});
  go('p-prev',function(){state.page=Math.max(0,state.page-1);});
  go('p-next',function(){state.page+=1;});
  go('p-last',function(){state.page=1e9;});
  window.addEventListener('hashchange',function(){if(fromHash()){render();table.scrollIntoView();}});
  fromHash();
  render();
  body.setAttribute('data-ready-ms',(performance.now()).toFixed(1));
  body.setAttribute('data-script-ms',(performance.now()-t0).toFixed(1));
  // the frame that paints the first rows: its callback runs before that frame is drawn
  requestAnimationFrame(function(){
    body.setAttribute('data-frame-ms',performance.now().toFixed(1));});
  window.addEventListener('load',function(){body.setAttribute('data-load-ms',performance.now().toFixed(1));});
})();
